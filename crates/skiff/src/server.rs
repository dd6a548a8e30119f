//! `skiff server`: lay out the data dir, make certificates and kubeconfigs, open the
//! datastore, start the API server, then the controllers once the API answers. Each step's
//! failure names what it was doing.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use apiserver::auth::TokenUser;
use apiserver::server::TlsMaterial;
use apiserver::{ApiConfig, ApiServer};

use crate::{certs, kubeconfig, ServerArgs};

/// `--data-dir`'s default, as k3s: `/var/lib/skiff` for root, `~/.skiff` otherwise.
pub fn default_data_dir() -> PathBuf {
    // As k3s: a system location for root, a per-user one otherwise.
    if unsafe { libc::geteuid() } == 0 {
        PathBuf::from("/var/lib/skiff")
    } else {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        home.join(".skiff")
    }
}

fn parse_cidr(s: &str, flag: &str) -> Result<(Ipv4Addr, u8)> {
    let (ip, prefix) = s
        .split_once('/')
        .with_context(|| format!("{flag} {s:?}: expected ADDRESS/PREFIX"))?;
    let ip: Ipv4Addr = ip
        .parse()
        .with_context(|| format!("{flag} {s:?}: bad address"))?;
    let prefix: u8 = prefix
        .parse()
        .with_context(|| format!("{flag} {s:?}: bad prefix length"))?;
    if prefix > 30 {
        bail!("{flag} {s:?}: the range is too small");
    }
    Ok((ip, prefix))
}

fn parse_port_range(s: &str) -> Result<(u16, u16)> {
    let (lo, hi) = s
        .split_once('-')
        .with_context(|| format!("--service-node-port-range {s:?}: expected LOW-HIGH"))?;
    let lo: u16 = lo
        .trim()
        .parse()
        .context("--service-node-port-range: bad low port")?;
    let hi: u16 = hi
        .trim()
        .parse()
        .context("--service-node-port-range: bad high port")?;
    if lo > hi {
        bail!("--service-node-port-range {s:?}: low port above high port");
    }
    Ok((lo, hi))
}

fn random_token() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn run(args: ServerArgs) -> Result<()> {
    let started = Instant::now();
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let server_dir = data_dir.join("server");
    std::fs::create_dir_all(&server_dir)
        .with_context(|| format!("creating data dir {}", server_dir.display()))?;
    let service_cidr = parse_cidr(&args.service_cidr, "--service-cidr")?;
    let cluster_cidr = parse_cidr(&args.cluster_cidr, "--cluster-cidr")?;
    let cluster_cidr =
        controllers::node_ipam::Ipv4Cidr::parse(&format!("{}/{}", cluster_cidr.0, cluster_cidr.1))
            .context("--cluster-cidr")?;
    if cluster_cidr.prefix > 24 {
        bail!("--cluster-cidr {cluster_cidr}: too small for a /24 per node (at most a /24)");
    }
    let node_port_range = parse_port_range(&args.service_node_port_range)?;
    let dns_upstreams = dns_upstreams(&args)?;
    let cluster_dns_ip = args.cluster_dns.unwrap_or_else(|| {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(service_cidr.1))
            .unwrap_or(0);
        IpAddr::V4(Ipv4Addr::from((u32::from(service_cidr.0) & mask) + 10))
    });

    // As k3s: on all addresses, the server advertises its node's address (the `kubernetes`
    // Service's endpoint, which pods must reach), and the admin kubeconfig says 127.0.0.1.
    let listens_everywhere = args.bind_address.is_unspecified();
    let advertise: IpAddr = args.advertise_address.or(args.node_ip).unwrap_or_else(|| {
        if !listens_everywhere {
            args.bind_address
        } else if args.disable_agent {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            crate::agent_cmd::embedded_node_ip(None, IpAddr::V4(Ipv4Addr::LOCALHOST))
        }
    });
    let kubernetes_ip = Ipv4Addr::from(u32::from(service_cidr.0) + 1);
    let mut names: Vec<String> = vec![
        "localhost".into(),
        "127.0.0.1".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        format!("kubernetes.default.svc.{}", args.cluster_domain),
        kubernetes_ip.to_string(),
        advertise.to_string(),
    ];
    if !args.bind_address.is_unspecified() {
        names.push(args.bind_address.to_string());
    }
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(host.trim().to_string());
    }
    names.extend(args.tls_san.iter().cloned());
    names.sort();
    names.dedup();
    let certs = certs::ensure(&server_dir.join("tls"), &names).context("preparing certificates")?;

    // Join token, k3s's secure form `K10<sha256 of the CA>::server:<secret>`: the secret
    // from the flag, else the one kept from an earlier start, else a new one.
    let ca_pem = std::fs::read_to_string(&certs.ca.cert)
        .with_context(|| format!("reading {}", certs.ca.cert.display()))?;
    let ca_hash = crate::agent_cmd::sha256_hex(ca_pem.as_bytes());
    let token_path = server_dir.join("token");
    let kept = std::fs::read_to_string(&token_path).unwrap_or_default();
    let given = args.token.as_deref().filter(|t| !t.trim().is_empty());
    let secret = match given.or(Some(kept.trim()).filter(|t| !t.is_empty())) {
        Some(text) => {
            let parsed = crate::agent_cmd::parse_token(text).context("the join token")?;
            if let Some(hash) = parsed.ca_hash.filter(|h| *h != ca_hash) {
                bail!("the join token pins CA sha256 {hash}, but this server's CA ({}) is sha256 {ca_hash}", certs.ca.cert.display());
            }
            parsed.secret
        }
        None => random_token(),
    };
    certs::write_private(&token_path, &format!("K10{ca_hash}::server:{secret}\n"))?;

    let store = match &args.datastore_endpoint {
        Some(endpoint) => store::open(Some(endpoint), &server_dir.join("db").join("state.db"))
            .await
            .with_context(|| format!("connecting to datastore {endpoint}"))?,
        None => {
            let db_dir = server_dir.join("db");
            std::fs::create_dir_all(&db_dir)
                .with_context(|| format!("creating {}", db_dir.display()))?;
            store::open(None, &db_dir.join("state.db"))
                .await
                .context("opening the embedded datastore")?
        }
    };

    let port = args.https_listen_port;
    let failover = crate::failover::Failover::resolve(&args);
    let config = ApiConfig {
        advertise_address: format!("{advertise}:{port}"),
        service_cidr,
        node_port_range,
        tokens: vec![TokenUser {
            token: secret.clone(),
            user: "system:admin".into(),
            groups: vec!["system:masters".into()],
        }],
        git_version: format!("v1.37.0+skiff{}", env!("CARGO_PKG_VERSION")),
        admission: api::defaults::AdmissionDefaults {
            not_ready_toleration_seconds: failover.not_ready_toleration_seconds,
            unreachable_toleration_seconds: failover.unreachable_toleration_seconds,
        },
    };
    let api = ApiServer::new(store, config);
    let signer =
        certs::NodeSigner::load(&certs.ca).context("loading the CA for node certificates")?;
    let _ = api.join.set(apiserver::join::Join {
        ca_pem: ca_pem.clone(),
        signer: std::sync::Arc::new(signer),
        allowed_users: vec!["system:admin".into()],
        cluster: apiserver::join::ClusterConfig {
            cluster_cidr: cluster_cidr.to_string(),
            service_cidr: format!("{}/{}", service_cidr.0, service_cidr.1),
            cluster_dns: cluster_dns_ip.to_string(),
            cluster_domain: args.cluster_domain.clone(),
        },
    });

    let _ = api.kubelet.set(certs::kubelet_client(&certs)?);
    let sa_key = certs::ensure_service_account_key(&server_dir.join("tls"))
        .context("preparing the service-account signing key")?;
    let sa_key = apiserver::service_accounts::jwt::SigningKey::from_pkcs8(&sa_key)
        .context("loading the service-account signing key")?;
    let _ = api
        .service_accounts
        .set(apiserver::service_accounts::Issuer::new(
            sa_key,
            &args.cluster_domain,
        ));

    let (cert_chain, key) = certs::load_rustls(&certs.serving.cert, &certs.serving.key)?;
    let (client_ca, _) = certs::load_rustls(&certs.ca.cert, &certs.ca.key)?;
    let tls = apiserver::server::tls_config(TlsMaterial {
        cert_chain,
        key,
        client_ca,
    })
    .map_err(|e| anyhow::anyhow!("TLS configuration: {e}"))?;
    let listener = tokio::net::TcpListener::bind((args.bind_address, port))
        .await
        .with_context(|| format!("listening on {}:{port}", args.bind_address))?;
    let serving = tokio::spawn(apiserver::server::serve(api.clone(), listener, tls));

    apiserver::bootstrap::ensure_builtin_objects(&api, port)
        .await
        .map_err(|e| anyhow::anyhow!("creating built-in objects: {e}"))?;
    if !args.disable.iter().any(|d| d == "local-storage") {
        apiserver::bootstrap::ensure_default_storage_class(&api)
            .await
            .map_err(|e| anyhow::anyhow!("creating the local-path StorageClass: {e}"))?;
    }
    apiserver::bootstrap::ensure_default_ingress_class(&api)
        .await
        .map_err(|e| anyhow::anyhow!("creating the skiff IngressClass: {e}"))?;
    // The embedded agent's node address, where pods find the cluster DNS.
    let node_ip =
        (!args.disable_agent).then(|| crate::agent_cmd::embedded_node_ip(args.node_ip, advertise));
    let cluster_dns = start_cluster_dns(
        &args,
        &api,
        advertise,
        node_ip,
        cluster_dns_ip,
        dns_upstreams,
    )
    .await;

    let kubeconfig_ip = if listens_everywhere && args.advertise_address.is_none() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        advertise
    };
    let url = format!(
        "https://{}:{port}",
        if kubeconfig_ip.is_ipv6() {
            format!("[{kubeconfig_ip}]")
        } else {
            kubeconfig_ip.to_string()
        }
    );
    let kubeconfig_path = args
        .write_kubeconfig
        .clone()
        .unwrap_or_else(|| data_dir.join("kubeconfig.yaml"));
    kubeconfig::write(&kubeconfig_path, &url, &certs.ca.cert, &certs.admin)
        .context("writing the admin kubeconfig")?;
    let local_url = format!("https://127.0.0.1:{port}");
    // The control loops' identity is their client certificate's, though their requests
    // reach the handlers in-process (`api_client::in_process`).
    let (controller_cert, _) = certs::load_rustls(&certs.controller.cert, &certs.controller.key)?;
    let controller_identity = controller_cert
        .first()
        .and_then(|der| apiserver::auth::identity_from_certificate(der.as_ref()))
        .context("reading the controllers' identity from their certificate")?;

    api.ready.store(true, Ordering::Release);
    tracing::info!(
        "skiff server ready in {} ms at {url}; kubeconfig written to {}",
        started.elapsed().as_millis(),
        kubeconfig_path.display()
    );
    println!("Wrote kubeconfig {}", kubeconfig_path.display());

    let controller_options = controllers::ControllerOptions {
        node_monitor_grace_period: failover.node_monitor_grace_period,
        node_monitor_period: failover.node_monitor_period,
        local_storage_path: args
            .default_local_storage_path
            .clone()
            .unwrap_or_else(|| data_dir.join("storage")),
        root_ca_pem: Some(ca_pem),
        cluster_cidr: Some(cluster_cidr),
        ..Default::default()
    };
    let controllers = tokio::spawn(run_controllers(
        crate::api_client::in_process(api.clone(), controller_identity),
        controller_options,
        cluster_dns,
    ));
    // The server's own node: an agent in this process that joins over loopback with the
    // server's token, exactly as `skiff agent` on another machine would.
    let agent = (!args.disable_agent).then(|| {
        let embedded = crate::agent_cmd::Embedded {
            server: local_url.clone(),
            token_file: token_path.clone(),
            data_dir: data_dir.clone(),
            node_name: args.node_name.clone(),
            node_ip: args.node_ip,
            fallback_ip: advertise,
            // The server's node carries k3s's role labels (`kubectl get nodes` ROLES shows
            // `control-plane,master`), before the user's own.
            labels: [
                "node-role.kubernetes.io/control-plane=true",
                "node-role.kubernetes.io/master=true",
            ]
            .into_iter()
            .map(String::from)
            .chain(args.node_label.iter().cloned())
            .collect(),
            taints: args.node_taint.clone(),
            kubelet_port: args.kubelet_port,
            image_gc: args.image_gc.clone(),
            ingress: args.ingress.clone(),
            service_cidr: args.service_cidr.clone(),
            pod_bridge: args.pod_bridge.clone(),
            pod_routes: args.pod_routes,
            cluster_cidr: args.cluster_cidr.clone(),
            // The node must renew faster than the control plane gives up on it: the fast
            // profile's 4 s grace needs a 4 s lease renewed every second.
            node_lease_duration_seconds: failover.node_monitor_grace_period.as_secs().clamp(1, 40)
                as i32,
        };
        tokio::spawn(async move {
            if let Err(e) = crate::agent_cmd::run_embedded(embedded).await {
                tracing::error!("the embedded node agent stopped: {e:#}");
            }
        })
    });

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    tokio::select! {
        r = serving => {
            match r {
                Ok(Ok(())) => bail!("the API listener stopped"),
                Ok(Err(e)) => bail!("the API listener failed: {e}"),
                Err(e) => bail!("the API listener task failed: {e}"),
            }
        }
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
        _ = sigterm.recv() => tracing::info!("terminated; shutting down"),
    }
    controllers.abort();
    if let Some(agent) = agent {
        agent.abort();
    }
    Ok(())
}

/// Start the controllers and the scheduler as API clients of `client`.
async fn run_controllers(
    client: kube::Client,
    options: controllers::ControllerOptions,
    cluster_dns: Option<Arc<dns::SharedZone>>,
) {
    let informers = Arc::new(informers::Factory::new(client.clone()));
    // The scheduler subscribes to the shared informers before run_all starts them, so it
    // hears their first lists too.
    let scheduler = scheduler::start(client.clone(), &informers);
    // The cluster DNS follows Services and EndpointSlices through the same informers.
    if let Some(zone) = cluster_dns {
        dns::follow(zone, &informers);
    }
    let ctx = controllers::Context::new(client, informers, options);
    futures::future::join(controllers::run_all(ctx), scheduler).await;
}

/// Where the cluster DNS forwards names outside the cluster domain:
/// `--cluster-dns-upstream`, else the nameservers of `--resolv-conf`.
fn dns_upstreams(args: &ServerArgs) -> Result<Vec<std::net::SocketAddr>> {
    if !args.cluster_dns_upstream.is_empty() {
        return args
            .cluster_dns_upstream
            .iter()
            .map(|u| {
                dns::parse_upstream(u).with_context(|| {
                    format!("--cluster-dns-upstream {u:?}: expected ADDRESS or ADDRESS:PORT")
                })
            })
            .collect();
    }
    match std::fs::read_to_string(&args.resolv_conf) {
        Ok(text) => Ok(dns::resolv_conf_nameservers(&text)),
        Err(e) => {
            tracing::warn!(
                "cluster DNS: reading {}: {e}; names outside {} will not resolve",
                args.resolv_conf.display(),
                args.cluster_domain
            );
            Ok(Vec::new())
        }
    }
}

/// The built-in cluster DNS (k3s's CoreDNS addon; `--disable coredns` turns it off): the
/// `kube-dns` Service and a DNS server on `<advertise address>:--cluster-dns-port`. Like
/// a failing CoreDNS pod on k3s, a DNS server that cannot listen is reported and the rest
/// of the cluster keeps running.
async fn start_cluster_dns(
    args: &ServerArgs,
    api: &apiserver::ApiServer,
    advertise: IpAddr,
    node_ip: Option<IpAddr>,
    cluster_dns: IpAddr,
    upstreams: Vec<std::net::SocketAddr>,
) -> Option<Arc<dns::SharedZone>> {
    if args.disable.iter().any(|d| d == "coredns") {
        return None;
    }
    // Pods reach the server's node address (a pod cannot reach the server's 127.0.0.1).
    if let Err(e) = apiserver::bootstrap::ensure_cluster_dns_service(
        api,
        cluster_dns,
        node_ip.unwrap_or(advertise),
        args.cluster_dns_port,
    )
    .await
    {
        tracing::error!(
            "creating the kube-dns Service at {cluster_dns}: {}",
            e.message
        );
    }
    let mut listen = vec![std::net::SocketAddr::new(advertise, args.cluster_dns_port)];
    if let Some(ip) = node_ip.filter(|ip| *ip != advertise) {
        listen.push(std::net::SocketAddr::new(ip, args.cluster_dns_port));
    }
    let config = dns::Config {
        listen,
        cluster_domain: args.cluster_domain.clone(),
        cluster_dns: vec![cluster_dns],
        upstreams,
    };
    let server = match dns::ClusterDns::bind(config).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!("cluster DNS not served: {e}");
            return None;
        }
    };
    tracing::info!(
        "cluster DNS serving {} on {:?}",
        args.cluster_domain,
        server.local_addrs()
    );
    let zone = server.zone();
    tokio::spawn(async move {
        if let Err(e) = server.run().await {
            tracing::error!("cluster DNS stopped: {e}");
        }
    });
    Some(zone)
}
