//! The agent's HTTPS API on port 10250 (being written).
