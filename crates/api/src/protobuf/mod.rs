//! (being written) Kubernetes protobuf request bodies decoded into JSON objects.
