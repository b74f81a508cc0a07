//! Several machines in one run: where the nodes meet (burn's global orchestrator) and how each
//! is reached (its tensor data service), in the form burn-collective's configuration takes.
//!
//! Every node runs the same command with its own `--node-rank`; node 0 also starts the
//! orchestrator, which only introduces the nodes: the all-reduces then go from node to node.
//! burn 0.21's multi-node barrier needs the fixes in `patches/` (see patches/README.md).

use burn::collective::{AllReduceStrategy, CollectiveConfig};

use crate::error::{Error, Result};

/// This node's place among the run's machines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLink {
    nodes: usize,
    rank: usize,
    orchestrator: Endpoint,
    node: Endpoint,
}

/// A `HOST:PORT` another machine can reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    /// Reads `HOST:PORT` (a `ws://` prefix is allowed); `flag` names it in the error.
    pub fn parse(text: &str, flag: &str) -> std::result::Result<Self, String> {
        let bare = text.trim().trim_start_matches("ws://");
        let bad = || format!("{flag} takes HOST:PORT (e.g. 10.0.0.1:29400), got {text:?}");
        let (host, port) = bare.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(Self {
            host: host.into(),
            port,
        })
    }

    fn url(&self) -> String {
        format!("ws://{}:{}", self.host, self.port)
    }
}

impl NodeLink {
    /// Node `rank` of `nodes`, meeting at `orchestrator` and reached at `node`.
    pub fn new(nodes: usize, rank: usize, orchestrator: Endpoint, node: Endpoint) -> Self {
        Self {
            nodes,
            rank,
            orchestrator,
            node,
        }
    }

    /// The number of machines in the run.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// This machine's rank among them.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// `config` joined to the other nodes. The global all-reduce is a tree: burn's ring (its
    /// default) refuses tensors with fewer rows than there are nodes, such as a loss's sum.
    pub fn configure(&self, config: CollectiveConfig) -> CollectiveConfig {
        config
            .with_num_nodes(self.nodes as u32)
            .with_global_address(self.orchestrator.url().parse().expect("any text parses"))
            .with_node_address(self.node.url().parse().expect("any text parses"))
            .with_data_service_port(self.node.port)
            .with_global_all_reduce_strategy(AllReduceStrategy::Tree(2))
    }

    /// On node 0, starts burn's global orchestrator on a thread of its own (it serves until
    /// the process ends); on the other nodes, nothing. burn's websocket servers log each
    /// connection at INFO on standard output; a subscriber that drops them is installed first.
    pub fn start(&self) -> Result<()> {
        let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::new());
        // burn's servers report a port they cannot take only in a log: check first.
        free_port(self.node.port, "--node-address")?;
        if self.rank != 0 {
            return Ok(());
        }
        free_port(self.orchestrator.port, "--orchestrator")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| {
                Error::Training(format!(
                    "--nodes: cannot start the orchestrator's runtime: {e}"
                ))
            })?;
        let port = self.orchestrator.port;
        std::thread::spawn(move || {
            runtime.block_on(burn_collective::start_global_orchestrator(port));
        });
        Ok(())
    }
}

/// Whether `port` can be listened on (as burn's servers do, on every interface).
fn free_port(port: u16, flag: &str) -> Result<()> {
    std::net::TcpListener::bind(("0.0.0.0", port))
        .map(drop)
        .map_err(|e| Error::Training(format!("{flag}: cannot listen on port {port} ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_host_and_port_with_or_without_the_scheme() {
        let plain = Endpoint::parse("10.0.0.1:29400", "--orchestrator").unwrap();
        assert_eq!(plain.url(), "ws://10.0.0.1:29400");
        let prefixed = Endpoint::parse("ws://node-a:7000", "--node-address").unwrap();
        assert_eq!(prefixed.url(), "ws://node-a:7000");
        for bad in ["10.0.0.1", ":29400", "host:port", "host:0", "host:70000"] {
            let error = Endpoint::parse(bad, "--orchestrator").unwrap_err();
            assert!(
                error.starts_with("--orchestrator takes HOST:PORT"),
                "{error}"
            );
        }
    }
}
