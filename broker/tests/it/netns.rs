//! A private network for a test's broker processes, in Linux network namespaces: one namespace
//! per node, each with one address on a bridge in a hub namespace, and a link from the test's
//! own namespace to that bridge. Cutting a node's link in the hub is a real network partition:
//! its packets reach neither the other nodes nor the test's clients, while the process runs on.
//! Everything is made by this test and removed when it is dropped (the host's own interfaces,
//! routes and firewall are not touched, apart from the one link and its subnet's route).
//!
//! Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and `ip` (iproute2): [`Namespaces::available`]
//! says whether this process has them.

use std::process::Command;

/// The namespaces of one test: `nodes` node namespaces on one subnet.
pub struct Namespaces {
    prefix: String,
    subnet: String,
    nodes: usize,
}

/// `ip ARGS`, which must succeed.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("runs ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Namespaces {
    /// Whether this process may make network namespaces (root, or a container that lets it,
    /// with `ip` on the PATH): it makes one and removes it.
    pub fn available() -> bool {
        let probe = format!("kt{}probe", std::process::id());
        let made = Command::new("ip")
            .args(["netns", "add", &probe])
            .output()
            .is_ok_and(|o| o.status.success());
        if made {
            let _ = Command::new("ip").args(["netns", "del", &probe]).output();
        }
        made
    }

    /// Makes the namespaces and links of `nodes` nodes, node `i` (from 1) at
    /// [`Namespaces::host`]`(i)`.
    pub fn new(nodes: usize) -> Self {
        sweep();
        let pid = std::process::id();
        let this = Self {
            prefix: format!("kt{pid}"),
            subnet: free_subnet(pid),
            nodes,
        };
        let hub = this.hub();
        ip(&["netns", "add", &hub]);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for i in 1..=nodes {
            let ns = this.namespace(i);
            let port = this.port_name(i);
            ip(&["netns", "add", &ns]);
            ip(&[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            this.plug(&port);
            let address = format!("{}/24", this.host(i));
            ip(&["-n", &ns, "addr", "add", &address, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        // The test's own end: an address on the bridge's subnet in this namespace.
        let own = this.own_link();
        let peer = format!("{}h", this.prefix);
        ip(&["link", "add", &own, "type", "veth", "peer", "name", &peer]);
        this.plug(&peer);
        let address = format!("{}.254/24", this.subnet);
        ip(&["addr", "add", &address, "dev", &own]);
        ip(&["link", "set", &own, "up"]);
        this
    }

    /// Moves link `name` (made in this namespace) into the hub and onto its bridge.
    fn plug(&self, name: &str) {
        let hub = self.hub();
        ip(&["link", "set", name, "netns", &hub]);
        ip(&["-n", &hub, "link", "set", name, "master", "br0"]);
        ip(&["-n", &hub, "link", "set", name, "up"]);
    }

    fn hub(&self) -> String {
        format!("{}hub", self.prefix)
    }

    fn own_link(&self) -> String {
        format!("{}o", self.prefix)
    }

    fn port_name(&self, node: usize) -> String {
        format!("{}p{node}", self.prefix)
    }

    /// Node `node`'s namespace, for `ip netns exec`.
    pub fn namespace(&self, node: usize) -> String {
        format!("{}n{node}", self.prefix)
    }

    /// Node `node`'s address.
    pub fn host(&self, node: usize) -> String {
        format!("{}.{node}", self.subnet)
    }

    /// Cuts node `node` off the network (`true`: from the other nodes and from the test's
    /// clients) or plugs it back in.
    pub fn cut(&self, node: usize, cut: bool) {
        let state = if cut { "down" } else { "up" };
        ip(&[
            "-n",
            &self.hub(),
            "link",
            "set",
            &self.port_name(node),
            state,
        ]);
    }
}

/// A subnet of 10.213.0.0/16 (out of the way of the usual private ranges' first blocks) that
/// no interface here is on: one per test process.
fn free_subnet(pid: u32) -> String {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .expect("runs ip (iproute2)");
    let taken = String::from_utf8_lossy(&out.stdout).into_owned();
    (0..250)
        .map(|i| format!("10.213.{}", (pid + i) % 250))
        .find(|subnet| !taken.contains(&format!("{subnet}.")))
        .expect("a free 10.213.x.0/24")
}

/// Removes the namespaces of test processes that died without removing theirs (SIGKILLed by a
/// timeout, say).
fn sweep() {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("runs ip (iproute2)");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix("kt") else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Deleting a namespace deletes its links and their peers, the test's own end too.
        for i in 1..=self.nodes {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.namespace(i)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.hub()])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.own_link()])
            .output();
    }
}
