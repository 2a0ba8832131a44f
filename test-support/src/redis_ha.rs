//! Redis as users run it when one server is not enough: a master with a
//! replica watched by a Sentinel, and a three-node Redis Cluster. Real
//! `redis-server` processes on free loopback ports, driven with
//! `redis-cli`, killed on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The name the sentinel knows the master by.
pub const SERVICE: &str = "mymaster";

/// One redis-server (or sentinel) process.
struct Node {
    child: Option<Child>,
    port: u16,
}

impl Node {
    /// Starts `redis-server` with `args` on a free port; None if it did not
    /// answer `PING` (the port was taken meanwhile).
    fn spawn(conf: Option<&Path>, args: &[&str], password: Option<&str>) -> Option<Node> {
        let port = crate::free_port();
        let mut cmd = Command::new("redis-server");
        if let Some(c) = conf {
            cmd.arg(c);
        }
        let child = cmd
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        let mut node = Node {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if node
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some())
            {
                return None;
            }
            if cli(port, password, &["PING"]).trim() == "PONG" {
                return Some(node);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `redis-cli` against 127.0.0.1:`port` and returns what it printed
/// (empty if it could not run).
pub fn cli(port: u16, password: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(p) = password {
        cmd.args(["--no-auth-warning", "-a", p]);
    }
    cmd.args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn spawn_retrying(conf: Option<&Path>, args: &[&str], password: Option<&str>) -> Node {
    (0..20)
        .find_map(|_| Node::spawn(conf, args, password))
        .expect("redis-server did not start on any free port")
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A master and one replica, both requiring `password`, and one sentinel
/// (quorum 1, a master is down after 1 s without an answer).
pub struct SentinelSet {
    master: Node,
    replica: Node,
    sentinel: Node,
    password: String,
    _dir: tempfile::TempDir,
}

impl SentinelSet {
    /// Starts the three and waits until the sentinel knows the replica.
    pub fn start(password: &str) -> SentinelSet {
        let dir = tempfile::tempdir().expect("tempdir");
        // A replica's first sync writes the master's snapshot to a file in
        // its `dir` (the working directory unless told): keep it out of
        // the checkout.
        let dir_arg = dir.path().to_string_lossy().into_owned();
        let base = [
            "--dir",
            &dir_arg,
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            password,
            "--masterauth",
            password,
        ];
        let master = spawn_retrying(None, &base, Some(password));
        let master_port = master.port.to_string();
        let mut replica_args = base.to_vec();
        replica_args.extend(["--replicaof", "127.0.0.1", &master_port]);
        let replica = spawn_retrying(None, &replica_args, Some(password));
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "sentinel monitor {SERVICE} 127.0.0.1 {master_port} 1\n\
                 sentinel auth-pass {SERVICE} {password}\n\
                 sentinel down-after-milliseconds {SERVICE} 1000\n\
                 sentinel failover-timeout {SERVICE} 5000\n"
            ),
        )
        .expect("sentinel.conf");
        let sentinel = spawn_retrying(Some(&conf), &["--sentinel", "--dir", &dir_arg], None);
        let set = SentinelSet {
            master,
            replica,
            sentinel,
            password: password.to_string(),
            _dir: dir,
        };
        wait_for("the replica to sync", 20, || {
            set.on_replica(&["INFO", "replication"])
                .contains("master_link_status:up")
        });
        wait_for("the sentinel to find the replica", 30, || {
            cli(set.sentinel.port, None, &["SENTINEL", "replicas", SERVICE])
                .contains(&set.replica.port.to_string())
        });
        set
    }

    /// `redis+sentinel://:PASSWORD@127.0.0.1:PORT/mymaster`.
    pub fn url(&self) -> String {
        format!(
            "redis+sentinel://:{}@127.0.0.1:{}/{SERVICE}",
            self.password, self.sentinel.port
        )
    }

    /// A command on the master.
    pub fn on_master(&self, args: &[&str]) -> String {
        cli(self.master.port, Some(&self.password), args)
    }

    /// A command on the replica.
    pub fn on_replica(&self, args: &[&str]) -> String {
        cli(self.replica.port, Some(&self.password), args)
    }

    /// Waits until the replica has every write the master took.
    pub fn wait_replicated(&self) {
        wait_for("replication", 10, || {
            self.on_master(&["WAIT", "1", "1000"]).trim() == "1"
        });
    }

    /// Cuts the replica off its master: it stays a replica but cannot
    /// resynchronise (its master password is now wrong), so it misses
    /// every write from here on.
    pub fn stall_replica(&self) {
        self.on_replica(&["CONFIG", "SET", "masterauth", "not-the-password"]);
        self.on_replica(&["CLIENT", "KILL", "TYPE", "master"]);
        wait_for("the replica to lose its master", 10, || {
            self.on_replica(&["INFO", "replication"])
                .contains("master_link_status:down")
        });
    }

    /// SIGKILLs the master and waits until the sentinel has made the
    /// replica the master.
    pub fn fail_over(&mut self) {
        self.master.kill();
        let want = self.replica.port.to_string();
        wait_for("the sentinel to promote the replica", 60, || {
            cli(
                self.sentinel.port,
                None,
                &["SENTINEL", "get-master-addr-by-name", SERVICE],
            )
            .lines()
            .any(|l| l.trim() == want)
                && self
                    .on_replica(&["INFO", "replication"])
                    .contains("role:master")
        });
    }
}

/// Three master nodes sharing the 16,384 slots, no replicas.
pub struct ClusterSet {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl ClusterSet {
    /// Starts the nodes, joins them, and waits until the cluster is ok.
    pub fn start() -> ClusterSet {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes = Vec::new();
        for i in 0..3 {
            let conf = dir.path().join(format!("nodes-{i}.conf"));
            let conf = conf.to_string_lossy().into_owned();
            let dir_arg = dir.path().to_string_lossy().into_owned();
            let args = [
                "--dir",
                &dir_arg,
                "--save",
                "",
                "--appendonly",
                "no",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--cluster-node-timeout",
                "2000",
            ];
            nodes.push(spawn_retrying(None, &args, None));
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli");
        assert!(status.success(), "redis-cli --cluster create failed");
        let set = ClusterSet { nodes, _dir: dir };
        wait_for("the cluster to be ok", 30, || {
            set.ports()
                .iter()
                .all(|p| cli(*p, None, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        });
        set
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2` (two seeds of three).
    pub fn url(&self) -> String {
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
            self.nodes[0].port, self.nodes[1].port
        )
    }

    /// The nodes' ports.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }
}
