//! The scenarios and what they share: starting a server (on SQLite or on a private etcd)
//! ready for measuring, and the objects they create.

pub mod containers;
pub mod dns;
pub mod failover;
pub mod ingress;
pub mod latency;
pub mod list;
pub mod pod_connect;
pub mod pod_dns;
pub mod pod_net;
pub mod pods;
pub mod schedule;
pub mod service_create;
pub mod services;
pub mod startup;
pub mod throughput;
pub mod watch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use hyper::StatusCode;

use crate::client::{self, Client, KubeConfig};
use crate::procs::{self, Etcd, SimAgent, SkiffProc};
use crate::{Args, StoreChoice};

pub struct Env {
    pub args: Args,
    pub skiff: PathBuf,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    Etcd,
}

impl Store {
    pub fn name(self) -> &'static str {
        match self {
            Store::Sqlite => "sqlite",
            Store::Etcd => "etcd",
        }
    }
}

impl Env {
    /// The stores a scenario measures: `--store`, else `default`.
    pub fn stores(&self, default: StoreChoice) -> Vec<Store> {
        match self.args.store.unwrap_or(default) {
            StoreChoice::Sqlite => vec![Store::Sqlite],
            StoreChoice::Etcd => vec![Store::Etcd],
            StoreChoice::Both => vec![Store::Sqlite, Store::Etcd],
        }
    }

    /// Starts a server on `store` and waits until it is ready.
    pub async fn start(&self, store: Store) -> Result<Running> {
        self.start_with(store, &[]).await
    }

    /// Starts a server on `store` with extra `skiff server` flags.
    pub async fn start_with(&self, store: Store, extra_args: &[String]) -> Result<Running> {
        let dir = tempfile::Builder::new()
            .prefix("skiff-bench-")
            .tempdir()
            .context("creating a temp dir")?;
        let etcd = match store {
            Store::Sqlite => None,
            Store::Etcd => Some(Etcd::start(&self.args.etcd, dir.path())?),
        };
        let endpoint = etcd.as_ref().map(|e| e.endpoint());
        let port = procs::free_port()?;
        let mut server = SkiffProc::spawn(
            &self.skiff,
            &dir.path().join("data"),
            port,
            endpoint.as_deref(),
            &dir.path().join("server.log"),
            extra_args,
        )?;
        client::wait_ready(&mut server, Duration::from_secs(30)).await?;
        let kc = KubeConfig::load(&server.kubeconfig())?;
        let client = Client::connect(&kc, self.args.conns).await?;
        Ok(Running {
            client,
            kc,
            store,
            port,
            agent: None,
            server,
            _etcd: etcd,
            _dir: dir,
        })
    }
}

/// A ready server. Fields drop in order: the client, the simulated nodes, the server,
/// etcd, then the dir.
pub struct Running {
    pub client: Client,
    pub kc: KubeConfig,
    pub store: Store,
    pub port: u16,
    /// Simulated nodes joined with [`Running::simulate`].
    pub agent: Option<SimAgent>,
    pub server: SkiffProc,
    _etcd: Option<Etcd>,
    _dir: tempfile::TempDir,
}

impl Running {
    pub fn pid(&self) -> Result<u32> {
        self.server.pid()
    }

    pub fn rss(&self) -> Result<u64> {
        procs::rss_bytes(self.pid()?)
    }

    /// Joins `n` simulated nodes (`sim-0` ..) with extra `skiff agent` flags; returns once
    /// all are registered.
    pub fn simulate(
        &mut self,
        skiff: &std::path::Path,
        n: usize,
        extra_args: &[String],
    ) -> Result<()> {
        let agent = SimAgent::start(
            skiff,
            &self.server.data_dir,
            self.port,
            n,
            extra_args,
            &self._dir.path().join("agent.log"),
            Duration::from_secs(600),
        )?;
        self.agent = Some(agent);
        Ok(())
    }

    pub async fn create_namespace(&self, name: &str) -> Result<()> {
        let body =
            format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{name}"}}}}"#);
        self.client
            .post("/api/v1/namespaces", Bytes::from(body))
            .await?
            .expect(StatusCode::CREATED, &format!("creating namespace {name}"))?;
        Ok(())
    }
}

/// A small ConfigMap (about 200 bytes of JSON).
pub fn configmap(name: &str, value: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","labels":{{"app":"bench"}}}},"data":{{"key":"{value}"}}}}"#
    ))
}

/// A minimal valid Pod.
pub fn pod(name: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"app":"bench"}}}},"spec":{{"containers":[{{"name":"app","image":"registry.k8s.io/pause:3.10"}}]}}}}"#
    ))
}

/// Requests per second.
pub fn rate(n: usize, over: Duration) -> String {
    format!("{:.0}", n as f64 / over.as_secs_f64().max(1e-9))
}
