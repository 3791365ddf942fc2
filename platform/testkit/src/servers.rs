//! Private servers a fault test may stop and start without touching the shared ones: a
//! PostgreSQL cluster (`initdb` + `pg_ctl` as the `postgres` user, on its own port, trust
//! auth) and NATS servers with JetStream (one, or a cluster of several on loopback routes).
//! Each lives in a temporary directory and is stopped when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A port free now (nothing is listening on it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not listen on {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "popug-{name}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

fn run(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The directory of PostgreSQL's server programs (`initdb`, `pg_ctl`).
fn pg_bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("{}: {e} (is PostgreSQL installed?)", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .unwrap_or_else(|| panic!("no pg_ctl under {}", root.display()))
}

/// A PostgreSQL cluster of this test's own.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl PrivatePostgres {
    /// Creates a cluster (as the `postgres` user when running as root, which initdb
    /// requires) and starts it.
    pub fn start() -> PrivatePostgres {
        let dir = temp_dir("pg");
        let bin = pg_bin();
        if is_root() {
            run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&dir),
                "chown",
            );
        }
        let data = dir.join("data");
        run(
            as_postgres(&bin.join("initdb"))
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "-D"])
                .arg(&data),
            "initdb",
        );
        let server = PrivatePostgres {
            port: free_port(),
            dir,
            bin,
        };
        server.resume();
        server
    }

    fn ctl(&self, args: &[&str]) -> Command {
        let mut command = as_postgres(&self.bin.join("pg_ctl"));
        command.arg("-D").arg(self.dir.join("data")).args(args);
        command
    }

    /// Maintenance URL (database `postgres`).
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops it at once, as a crash would (`pg_ctl -m immediate`).
    pub fn kill(&self) {
        run(
            &mut self.ctl(&["-m", "immediate", "-w", "stop"]),
            "pg_ctl stop",
        );
    }

    /// Starts it (again) and waits until it accepts connections.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        run(
            &mut self.ctl(&[
                "-w",
                "-t",
                "30",
                "-o",
                &options,
                "-l",
                &log.to_string_lossy(),
                "start",
            ]),
            "pg_ctl start",
        );
        wait_for_port(self.port, "PostgreSQL");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .ctl(&["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// `program` run as the `postgres` user when this process is root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// A NATS server with JetStream of this test's own, alone or in a cluster.
pub struct PrivateNats {
    pub port: u16,
    /// Its route (cluster) port.
    pub cluster_port: u16,
    name: String,
    dir: PathBuf,
    routes: Vec<u16>,
    child: Option<Child>,
}

impl PrivateNats {
    /// A single server, started.
    pub fn start() -> PrivateNats {
        let mut server = PrivateNats::configured("solo", Vec::new());
        server.resume();
        server
    }

    /// `n` servers clustered on loopback routes, started (JetStream needs at least 3 for
    /// replicated streams).
    pub fn cluster(n: usize) -> Vec<PrivateNats> {
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut servers: Vec<PrivateNats> = (0..n)
            .map(|i| {
                let mut server = PrivateNats::configured(&format!("n{i}"), cluster_ports.clone());
                server.cluster_port = cluster_ports[i];
                server
            })
            .collect();
        for server in &mut servers {
            server.resume();
        }
        servers
    }

    fn configured(name: &str, routes: Vec<u16>) -> PrivateNats {
        PrivateNats {
            port: free_port(),
            cluster_port: free_port(),
            name: name.to_owned(),
            dir: temp_dir(&format!("nats-{name}")),
            routes,
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Its server name (`solo`, or `n0`, `n1`, … in a cluster), as JetStream names
    /// stream leaders.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts it (again, with the same store) and waits until it listens.
    pub fn resume(&mut self) {
        let mut command = Command::new("nats-server");
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.join("store"))
            .args(["-n", &self.name]);
        if !self.routes.is_empty() {
            let routes: Vec<String> = self
                .routes
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            command
                .args(["--cluster_name", "popug-test"])
                .args([
                    "--cluster",
                    &format!("nats://127.0.0.1:{}", self.cluster_port),
                ])
                .args(["--routes", &routes.join(",")]);
        }
        let log = std::fs::File::create(self.dir.join("server.log"))
            .unwrap_or_else(|e| panic!("nats log: {e}"));
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("nats-server: {e} (is it installed?)"));
        self.child = Some(child);
        wait_for_port(self.port, "nats-server");
    }

    /// Kills it at once (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
