//! A throwaway PostgreSQL cluster of a test's own, for tests that stop, restart or limit the
//! server: `initdb` into a temporary directory, its own port, removed when dropped. Nothing
//! else on the machine is touched.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A private cluster, stopped and deleted when dropped.
pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    /// The server's settings (`-c name=value`), kept across restarts.
    settings: Vec<String>,
}

impl Cluster {
    /// Starts a cluster with these `postgres -c` settings; `None` (and one line) when the
    /// server binaries are not installed, unless CI requires them.
    pub fn start(settings: &[&str]) -> Option<Self> {
        let Some(bin) = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|versions| {
            versions.filter_map(|v| Some(v.ok()?.path().join("bin"))).filter(|b| b.join("initdb").exists()).max()
        }) else {
            assert!(
                std::env::var_os("MEET_WEBHOOKS_REQUIRE_POSTGRES").is_none(),
                "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (Debian's postgresql package)"
            );
            eprintln!("skipped: a private PostgreSQL cluster needs initdb under /usr/lib/postgresql/*/bin");
            return None;
        };
        let dir = tempfile::Builder::new().prefix("mw-cluster-").tempdir().unwrap();
        // The server will not run as root: as root, it runs as `postgres`, which owns the directory.
        if is_root() {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(status.success());
        }
        let settings = settings.iter().map(|s| (*s).to_owned()).collect();
        let mut cluster = Self { bin, dir, port: free_port(), settings };
        let data = cluster.data();
        cluster.run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"]);
        // A port free a moment ago may be taken by the time the server binds it: another port.
        for _ in 0..5 {
            match cluster.try_up() {
                Ok(()) => return Some(cluster),
                Err(log) if log.contains("Address already in use") => cluster.port = free_port(),
                Err(log) => panic!("{log}"),
            }
        }
        panic!("no free port for a private cluster after 5 tries");
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// `postgres://` URL of a database on this cluster (`postgres` always exists).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the server, waiting until it takes connections.
    pub fn up(&self) {
        if let Err(why) = self.try_up() {
            panic!("{why}");
        }
    }

    /// Starts the server; on failure, what `pg_ctl` said and the server's log.
    fn try_up(&self) -> Result<(), String> {
        let mut options =
            format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.path().display());
        for setting in &self.settings {
            options.push_str(&format!(" -c {setting}"));
        }
        let log = self.dir.path().join("server.log");
        let args = ["-D", &self.data(), "-o", &options, "-l", &log.display().to_string(), "-w", "-t", "60", "start"];
        self.try_run("pg_ctl", &args)
            .map_err(|why| format!("{why}\nserver log:\n{}", std::fs::read_to_string(&log).unwrap_or_default()))
    }

    /// Stops the server at once, as a crash would (no checkpoint, no goodbye to clients).
    pub fn crash(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }

    /// Runs SQL on the database `postgres`, as the superuser.
    pub fn sql(&self, sql: &str) {
        let psql = self.bin.join("psql");
        let output = Command::new(psql)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &self.url("postgres"), "-c", sql])
            .output()
            .unwrap();
        assert!(output.status.success(), "{sql}: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// A clean restart (connections closed, a checkpoint).
    pub fn restart(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
        self.up();
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        if let Err(why) = self.try_run(program, args) {
            panic!("{why}");
        }
    }

    /// Runs one of the server's programs; on failure, the command and what it printed.
    fn try_run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let output = self.command(program).args(args).stdin(Stdio::null()).output().unwrap();
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A port that is free now, below the kernel's range for outgoing connections: there, the
/// thousands of connections other tests open at once cannot take it between a restart's stop
/// and start.
fn free_port() -> u16 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let first_ephemeral = range.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(32768);
    let low = 10_000.min(first_ephemeral / 2);
    // A random start (each `RandomState` is keyed afresh), then a prime stride through the range.
    let start = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0);
    for i in 0..1000u64 {
        let port = low + (start.wrapping_add(i * 7919) % u64::from(first_ephemeral - low)) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

/// A TCP proxy in front of a port, that can cut one replica off from the database while the
/// others reach it: `down` closes every connection through it and refuses new ones.
pub struct Proxy {
    pub port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    pub fn to(port: u16) -> Self {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy =
            Self { port: listener.local_addr().unwrap().port(), down: Default::default(), open: Default::default() };
        let (down, open) = (proxy.down.clone(), proxy.open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if down.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", port)) else { continue };
                let mut open = open.lock().unwrap();
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    open.push(from.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        proxy
    }

    /// Cuts every connection through the proxy, and refuses new ones until [`Proxy::up`].
    pub fn down(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn up(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}
