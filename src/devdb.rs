//! A private PostgreSQL for `orderflow dev`, so the whole platform runs with nothing
//! started beforehand. It is built from the machine's installed server binaries and keeps
//! its data directory between runs.
//!
//! PostgreSQL refuses to run as root, so when we are root (a Debian container, CI) the
//! server-side tools run as the `postgres` system user; on a laptop they run as us.

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Output, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use tokio::process::Command;
use tracing::{debug, info, warn};

const DATABASE: &str = "orderflow";
const SUPERUSER: &str = "postgres";
/// How long pg_ctl may wait for the server to come up or go down.
const PG_CTL_TIMEOUT_SECS: &str = "60";
/// `sun_path` is 108 bytes on Linux (104 on macOS); longer socket paths make the server fail.
const MAX_SOCKET_PATH: usize = 103;

const NOT_INSTALLED: &str = "PostgreSQL server binaries (initdb, pg_ctl) not found: install them, \
    e.g. `apt-get install postgresql` on Debian/Ubuntu or `brew install postgresql@16` on macOS, \
    or pass --database-url / DATABASE_URL to use an existing server";

/// Where `orderflow dev` keeps its cluster: `$ORDERFLOW_HOME/pg`, or `./.orderflow/pg`.
pub(crate) fn default_data_dir() -> PathBuf {
    std::env::var_os("ORDERFLOW_HOME")
        .filter(|home| !home.is_empty())
        .map_or_else(|| PathBuf::from("./.orderflow"), PathBuf::from)
        .join("pg")
}

/// A cluster we started (or found left over from a killed run) in a data directory of ours.
///
/// Call [`PrivatePostgres::stop`] on shutdown; if it is dropped instead, a fast shutdown
/// is requested without waiting for it.
pub(crate) struct PrivatePostgres {
    tools: Tools,
    /// Absolute and UTF-8: these paths travel through pg_ctl's shell command line.
    data_dir: String,
    log_file: String,
    socket_dir: String,
    port: u16,
    url: String,
    /// `url` over the Unix socket, when its path fits.
    socket_url: Option<String>,
    /// Whether a shutdown is still owed.
    running: bool,
}

impl PrivatePostgres {
    /// Initialise (if needed) and start a cluster in `data_dir` listening on 127.0.0.1:`port`.
    pub(crate) async fn start(data_dir: &Path, port: u16, fresh: bool) -> Result<Self> {
        let data_dir = std::path::absolute(data_dir)
            .with_context(|| format!("resolving the data directory {}", data_dir.display()))?;
        let home = data_dir
            .parent()
            .with_context(|| format!("{} has no parent directory", data_dir.display()))?;
        let utf8 = |path: &Path| {
            path.to_str().map(str::to_owned).with_context(|| {
                format!(
                    "{} is not valid UTF-8; choose another data directory",
                    path.display()
                )
            })
        };
        let mut pg = Self {
            tools: Tools::discover().await?,
            data_dir: utf8(&data_dir)?,
            log_file: utf8(&home.join("postgres.log"))?,
            socket_dir: utf8(&home.join("postgres-socket"))?,
            port,
            url: format!("postgres://{SUPERUSER}@127.0.0.1:{port}/{DATABASE}"),
            socket_url: None,
            running: false,
        };
        if pg.socket_fits() {
            // The socket directory as the URL's host, percent-encoded (a host that decodes
            // to an absolute path is a socket directory to libpq and sqlx alike).
            let host: String = pg
                .socket_dir
                .bytes()
                .map(|byte| match byte {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        char::from(byte).to_string()
                    }
                    _ => format!("%{byte:02X}"),
                })
                .collect();
            pg.socket_url = Some(format!("postgres://{SUPERUSER}@{host}:{port}/{DATABASE}"));
        }
        info!(data_dir = %pg.data_dir, port, bindir = %pg.tools.bindir.display(), "starting a private PostgreSQL");

        if fresh {
            pg.wipe().await?;
        }
        pg.prepare_directories(home).await?;
        if pg.initialised() {
            pg.check_version().await?;
        } else {
            pg.initdb().await?;
        }
        match pg.state().await? {
            State::Running {
                port: Some(running),
            } if running == port => {
                info!(data_dir = %pg.data_dir, "reusing the PostgreSQL left running in the data directory");
                pg.running = true;
            }
            State::Running { port: other } => {
                info!(data_dir = %pg.data_dir, ?other, "restarting the PostgreSQL left running on another port");
                pg.pg_ctl_stop().await?;
                pg.launch().await?;
            }
            State::Stopped => pg.launch().await?,
        }
        pg.ensure_database().await?;
        Ok(pg)
    }

    /// The directory of the server's binaries (and its client tools: psql, pgbench).
    pub(crate) fn bindir(&self) -> &Path {
        &self.tools.bindir
    }

    /// e.g. postgres://postgres@127.0.0.1:54329/orderflow  (database `orderflow` created if missing)
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The URL for processes on this machine: over the cluster's Unix socket when its path
    /// fits, else [`Self::url`]. A round trip over a Unix socket skips the loopback TCP/IP
    /// stack, which costs the server and the client CPU on every statement.
    pub(crate) fn local_url(&self) -> &str {
        self.socket_url.as_deref().unwrap_or(&self.url)
    }

    /// Where the server's Unix socket lives, when its path fits.
    pub(crate) fn socket_dir(&self) -> Option<&str> {
        self.socket_fits().then_some(self.socket_dir.as_str())
    }

    fn socket_fits(&self) -> bool {
        self.socket_dir.len() + "/.s.PGSQL.65535".len() <= MAX_SOCKET_PATH
    }

    /// Fast shutdown (pg_ctl stop -m fast), waits for it.
    pub(crate) async fn stop(mut self) -> Result<()> {
        info!(data_dir = %self.data_dir, "stopping the private PostgreSQL");
        self.pg_ctl_stop().await?;
        self.running = false;
        Ok(())
    }

    fn initialised(&self) -> bool {
        Path::new(&self.data_dir).join("PG_VERSION").is_file()
    }

    /// Removes the data directory, stopping its server first, but only if it looks like one
    /// of ours: a mistyped path must not cost someone their files.
    async fn wipe(&self) -> Result<()> {
        let data = Path::new(&self.data_dir);
        if !data.exists() {
            return Ok(());
        }
        if self.initialised() {
            if let State::Running { .. } = self.state().await? {
                self.pg_ctl_stop().await?;
            }
        } else {
            let mut entries = tokio::fs::read_dir(data)
                .await
                .with_context(|| format!("reading {}", self.data_dir))?;
            if entries.next_entry().await?.is_some() {
                bail!(
                    "refusing to wipe {}: it is not empty and is not a PostgreSQL data directory",
                    self.data_dir
                );
            }
        }
        info!(data_dir = %self.data_dir, "wiping the private PostgreSQL data directory");
        tokio::fs::remove_dir_all(data)
            .await
            .with_context(|| format!("removing {}", self.data_dir))
    }

    async fn prepare_directories(&self, home: &Path) -> Result<()> {
        let data = Path::new(&self.data_dir);
        tokio::fs::create_dir_all(home)
            .await
            .with_context(|| format!("creating {}", home.display()))?;
        if !data.exists() {
            tokio::fs::DirBuilder::new()
                .mode(0o700)
                .create(data)
                .await
                .with_context(|| format!("creating {}", self.data_dir))?;
        }
        tokio::fs::create_dir_all(&self.socket_dir)
            .await
            .with_context(|| format!("creating {}", self.socket_dir))?;

        let ServerUser::Postgres { uid, gid, .. } = self.tools.server_user else {
            return Ok(());
        };
        make_traversable(home).await?;
        let owner = format!("{uid}:{gid}");
        let data_owner = tokio::fs::metadata(data)
            .await
            .with_context(|| format!("inspecting {}", self.data_dir))?
            .uid();
        if data_owner != uid {
            let mut chown = StdCommand::new("chown");
            chown.args(["-R", &owner, &self.data_dir]);
            run(
                chown,
                &format!("handing {} to the postgres user", self.data_dir),
            )
            .await?;
        }
        // pg_ctl opens the log as `postgres`, who may not write to `home` itself.
        tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .await
            .with_context(|| format!("creating {}", self.log_file))?;
        let mut chown = StdCommand::new("chown");
        chown.args([&owner, &self.log_file, &self.socket_dir]);
        run(
            chown,
            "handing the PostgreSQL log and socket directory to the postgres user",
        )
        .await?;
        Ok(())
    }

    /// A data directory from another major version would only fail later, in the log.
    async fn check_version(&self) -> Result<()> {
        let path = Path::new(&self.data_dir).join("PG_VERSION");
        let cluster = tokio::fs::read_to_string(&path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        let cluster = cluster.trim();
        let out = run(
            self.tools.server("pg_ctl", &["--version"]),
            "asking pg_ctl for its version",
        )
        .await?;
        // "pg_ctl (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)"
        let installed = out.split_whitespace().nth(2).unwrap_or_default();
        let same_major = installed
            .strip_prefix(cluster)
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()));
        if !same_major {
            bail!(
                "the data directory {} was created by PostgreSQL {cluster} but the installed server \
                 is {installed}: pass --fresh to recreate it (its data is lost) or install \
                 PostgreSQL {cluster}",
                self.data_dir
            );
        }
        Ok(())
    }

    async fn initdb(&self) -> Result<()> {
        info!(data_dir = %self.data_dir, "initialising a PostgreSQL data directory");
        // Trust lets anyone who can reach the server log in as any role without a password.
        // That is acceptable for a throwaway development database only because the server
        // listens on 127.0.0.1 alone (see `launch`): never copy this to a shared machine.
        let args = [
            "-D",
            &self.data_dir,
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
        ];
        run(
            self.tools.server("initdb", &args),
            &format!(
                "initialising a PostgreSQL data directory in {}",
                self.data_dir
            ),
        )
        .await?;
        Ok(())
    }

    async fn state(&self) -> Result<State> {
        if !self.initialised() {
            return Ok(State::Stopped);
        }
        let out = output(
            self.tools
                .server("pg_ctl", &["status", "-D", &self.data_dir]),
            "checking whether PostgreSQL already runs",
        )
        .await?;
        match out.status.code() {
            Some(0) => Ok(State::Running {
                port: self.running_port().await,
            }),
            // 3: not running; 4: no accessible data directory (not yet handed to postgres).
            Some(3 | 4) => Ok(State::Stopped),
            _ => Err(failure(&out))
                .with_context(|| format!("checking whether PostgreSQL runs in {}", self.data_dir)),
        }
    }

    /// The port recorded on the fourth line of `postmaster.pid`.
    async fn running_port(&self) -> Option<u16> {
        let pid_file = tokio::fs::read_to_string(Path::new(&self.data_dir).join("postmaster.pid"))
            .await
            .ok()?;
        pid_file.lines().nth(3)?.trim().parse().ok()
    }

    async fn launch(&mut self) -> Result<()> {
        ensure_port_free(self.port).await?;
        let socket_dir = if self.socket_fits() {
            shell_quote(&self.socket_dir)
        } else {
            debug!(socket_dir = %self.socket_dir, "path too long for a Unix socket; TCP only");
            "''".to_owned()
        };
        // pg_ctl hands these to `/bin/sh -c`, hence the quoting.
        let options = format!(
            "-p {} -k {socket_dir} -c listen_addresses=127.0.0.1",
            self.port
        );
        let args = [
            "start",
            "-D",
            &self.data_dir,
            "-l",
            &self.log_file,
            "-w",
            "-t",
            PG_CTL_TIMEOUT_SECS,
            "-o",
            &options,
        ];
        let mut pg_ctl = self.tools.server("pg_ctl", &args);
        // A process group of its own keeps the terminal's Ctrl-C away from the server:
        // we stop it ourselves, after the services that use it.
        pg_ctl.process_group(0);
        let out = output(pg_ctl, "starting PostgreSQL").await?;
        if !out.status.success() {
            let log = log_tail(&self.log_file).await;
            return Err(failure(&out)).with_context(|| {
                format!(
                    "starting PostgreSQL in {} on 127.0.0.1:{}; the end of {} reads:\n{log}",
                    self.data_dir, self.port, self.log_file
                )
            });
        }
        self.running = true;
        Ok(())
    }

    async fn pg_ctl_stop(&self) -> Result<()> {
        let args = [
            "stop",
            "-D",
            &self.data_dir,
            "-m",
            "fast",
            "-w",
            "-t",
            PG_CTL_TIMEOUT_SECS,
        ];
        run(
            self.tools.server("pg_ctl", &args),
            &format!("stopping PostgreSQL in {}", self.data_dir),
        )
        .await?;
        Ok(())
    }

    async fn ensure_database(&self) -> Result<()> {
        let exists = self
            .psql(
                "postgres",
                &format!("select 1 from pg_database where datname = '{DATABASE}'"),
            )
            .await?;
        if exists == "1" {
            return Ok(());
        }
        info!(database = DATABASE, "creating the database");
        let port = self.port.to_string();
        let mut createdb = self.tools.client("createdb");
        createdb.args([
            "-w",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            SUPERUSER,
            DATABASE,
        ]);
        run(createdb, &format!("creating the database {DATABASE}")).await?;
        Ok(())
    }

    /// Runs `sql` over TCP as the superuser (trust needs no user switch) and returns the
    /// unaligned, tuples-only output.
    async fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let port = self.port.to_string();
        let mut psql = self.tools.client("psql");
        psql.args([
            "-X",
            "-w",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            SUPERUSER,
            "-d",
            database,
            "-tA",
            "-c",
            sql,
        ]);
        let out = run(psql, &format!("running `{sql}` in the database {database}")).await?;
        Ok(out.trim().to_owned())
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        warn!(data_dir = %self.data_dir, "PrivatePostgres dropped without stop(); requesting a fast shutdown");
        // -W: signal and return; blocking here could stall the runtime.
        let mut pg_ctl = self.tools.server(
            "pg_ctl",
            &["stop", "-D", &self.data_dir, "-m", "fast", "-W"],
        );
        if let Err(error) = pg_ctl.stdout(Stdio::null()).stderr(Stdio::null()).status() {
            warn!(%error, "could not run pg_ctl stop");
        }
    }
}

enum State {
    Stopped,
    Running { port: Option<u16> },
}

/// Where the PostgreSQL binaries are, and as whom the server-side ones must run.
struct Tools {
    bindir: PathBuf,
    server_user: ServerUser,
}

enum ServerUser {
    /// We are not root: the server runs as us.
    Current,
    /// We are root, which PostgreSQL refuses: the server runs as the `postgres` account.
    Postgres { switch: Switch, uid: u32, gid: u32 },
}

enum Switch {
    Runuser(PathBuf),
    /// Where util-linux is missing (busybox); needs the command as one shell line.
    Su(PathBuf),
}

impl Tools {
    async fn discover() -> Result<Self> {
        Ok(Self {
            bindir: find_bindir().await?,
            server_user: ServerUser::discover().await?,
        })
    }

    /// A server-side tool (initdb, pg_ctl), run as the server's user.
    fn server(&self, tool: &str, args: &[&str]) -> StdCommand {
        let program = self.bindir.join(tool);
        let mut cmd = match &self.server_user {
            ServerUser::Current => {
                let mut cmd = StdCommand::new(&program);
                cmd.args(args);
                cmd
            }
            ServerUser::Postgres {
                switch: Switch::Runuser(runuser),
                ..
            } => {
                let mut cmd = StdCommand::new(runuser);
                cmd.args(["-u", SUPERUSER, "--"]).arg(&program).args(args);
                cmd
            }
            ServerUser::Postgres {
                switch: Switch::Su(su),
                ..
            } => {
                let line = std::iter::once(shell_quote(&program.to_string_lossy()))
                    .chain(args.iter().map(|arg| shell_quote(arg)))
                    .collect::<Vec<_>>()
                    .join(" ");
                let mut cmd = StdCommand::new(su);
                cmd.args(["-s", "/bin/sh", SUPERUSER, "-c", &line]);
                cmd
            }
        };
        // Our working directory may be closed to `postgres` (e.g. /root); every path is absolute.
        cmd.current_dir("/");
        scrub_environment(&mut cmd);
        cmd
    }

    /// A client tool (psql, createdb), run as us.
    fn client(&self, tool: &str) -> StdCommand {
        let bundled = self.bindir.join(tool);
        let mut cmd = if is_executable(&bundled) {
            StdCommand::new(bundled)
        } else {
            StdCommand::new(tool)
        };
        scrub_environment(&mut cmd);
        cmd
    }
}

impl ServerUser {
    async fn discover() -> Result<Self> {
        if effective_uid().await? != 0 {
            return Ok(Self::Current);
        }
        let id = |flag: &'static str| async move {
            let mut cmd = StdCommand::new("id");
            cmd.args([flag, SUPERUSER]);
            let out = output(cmd, "looking up the postgres user").await?;
            if !out.status.success() {
                bail!(
                    "running as root, which PostgreSQL refuses, and there is no `postgres` system \
                     user to run it as: install the postgresql package (it creates the user), \
                     create the user, or run orderflow as a normal user"
                );
            }
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u32>()
                .with_context(|| format!("parsing the output of `id {flag} postgres`"))
        };
        let uid = id("-u").await?;
        let gid = id("-g").await?;
        let switch = if let Some(runuser) = ["/usr/sbin/runuser", "/sbin/runuser"]
            .iter()
            .map(PathBuf::from)
            .find(|path| is_executable(path))
            .or_else(|| which("runuser"))
        {
            Switch::Runuser(runuser)
        } else if let Some(su) = which("su") {
            Switch::Su(su)
        } else {
            bail!("running as root, but neither `runuser` nor `su` is available to run PostgreSQL as the postgres user");
        };
        Ok(Self::Postgres { switch, uid, gid })
    }
}

/// `pg_config --bindir` if it has the server tools, else the newest installed server, else
/// wherever `initdb` on PATH really lives.
async fn find_bindir() -> Result<PathBuf> {
    if let Some(pg_config) = which("pg_config") {
        let mut cmd = StdCommand::new(pg_config);
        cmd.arg("--bindir");
        match run(cmd, "asking pg_config for the bindir").await {
            // Debian's pg_config comes with libpq-dev, whose version may differ from the server's.
            Ok(out) if has_server_tools(Path::new(out.trim())) => return Ok(out.trim().into()),
            Ok(out) => debug!(
                bindir = out.trim(),
                "pg_config's bindir has no initdb/pg_ctl"
            ),
            Err(error) => debug!(%error, "pg_config failed"),
        }
    }
    if let Some(bindir) = newest_installed() {
        return Ok(bindir);
    }
    which("initdb")
        .and_then(|initdb| initdb.canonicalize().ok())
        .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
        .filter(|bindir| has_server_tools(bindir))
        .ok_or_else(|| anyhow!(NOT_INSTALLED))
}

/// Debian's /usr/lib/postgresql/<v>/bin, Homebrew's <prefix>/opt/postgresql[@<v>]/bin.
fn newest_installed() -> Option<PathBuf> {
    let roots = [
        ("/usr/lib/postgresql", ""),
        ("/usr/local/opt", "postgresql"),
        ("/opt/homebrew/opt", "postgresql"),
    ];
    roots
        .into_iter()
        .flat_map(|(root, prefix)| {
            std::fs::read_dir(root)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(move |entry| {
                    let name = entry.file_name().into_string().ok()?;
                    let version = version_key(name.strip_prefix(prefix)?)?;
                    let bindir = entry.path().join("bin");
                    has_server_tools(&bindir).then_some((version, bindir))
                })
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bindir)| bindir)
}

/// "15" → (15, 0), "9.6" → (9, 6), "@16" → (16, 0), "" (unversioned formula) → (0, 0).
fn version_key(suffix: &str) -> Option<(u32, u32)> {
    if suffix.is_empty() {
        return Some((0, 0));
    }
    let mut parts = suffix.strip_prefix('@').unwrap_or(suffix).split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = match parts.next() {
        Some(minor) => minor.parse().ok()?,
        None => 0,
    };
    Some((major, minor))
}

fn has_server_tools(bindir: &Path) -> bool {
    is_executable(&bindir.join("initdb")) && is_executable(&bindir.join("pg_ctl"))
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// From /proc on Linux (no libc: unsafe code is forbidden), `id -u` elsewhere.
async fn effective_uid() -> Result<u32> {
    if let Ok(status) = tokio::fs::read_to_string("/proc/self/status").await {
        // "Uid:\treal\teffective\tsaved\tfs"
        let euid = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|euid| euid.parse().ok());
        if let Some(euid) = euid {
            return Ok(euid);
        }
    }
    let mut id = StdCommand::new("id");
    id.arg("-u");
    let out = run(id, "finding out which user we run as").await?;
    out.trim().parse().context("parsing the output of `id -u`")
}

/// Lets the `postgres` user reach `dir` by adding search (not read) permission for others
/// wherever it is missing, e.g. on /root.
async fn make_traversable(dir: &Path) -> Result<()> {
    for ancestor in dir.ancestors() {
        let mode = tokio::fs::metadata(ancestor)
            .await
            .with_context(|| format!("inspecting {}", ancestor.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            warn!(dir = %ancestor.display(), "adding o+x so the postgres user can reach its data directory");
            tokio::fs::set_permissions(ancestor, std::fs::Permissions::from_mode(mode | 0o001))
                .await
                .with_context(|| format!("making {} traversable", ancestor.display()))?;
        }
    }
    Ok(())
}

async fn ensure_port_free(port: u16) -> Result<()> {
    let busy = || {
        anyhow!("port {port} on 127.0.0.1 is already in use by another program: pick a free one with --pg-port")
    };
    let socket = tokio::net::TcpSocket::new_v4().context("probing the PostgreSQL port")?;
    // Like the server itself: connections in TIME_WAIT from our previous run do not count.
    socket
        .set_reuseaddr(true)
        .context("probing the PostgreSQL port")?;
    match socket.bind(SocketAddr::from(([127, 0, 0, 1], port))) {
        Ok(()) => socket.listen(1).map(drop).map_err(|_| busy()),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => Err(busy()),
        Err(error) => Err(error).with_context(|| format!("probing port {port} on 127.0.0.1")),
    }
}

/// PG* variables from the caller's shell (PGDATA, PGPORT, PGSSLMODE, ...) must not steer
/// our tools away from the cluster we manage.
fn scrub_environment(cmd: &mut StdCommand) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            cmd.env_remove(name);
        }
    }
    cmd.stdin(Stdio::null());
}

fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./=:@%+,".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

async fn output(cmd: StdCommand, doing: &str) -> Result<Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    Command::from(cmd)
        .output()
        .await
        .with_context(|| format!("{doing}: could not run {program}"))
}

/// Runs `cmd` to completion and returns its stdout; a failure carries its stderr.
async fn run(cmd: StdCommand, doing: &str) -> Result<String> {
    let out = output(cmd, doing).await?;
    if !out.status.success() {
        return Err(failure(&out)).context(doing.to_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn failure(out: &Output) -> anyhow::Error {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let said = if stderr.trim().is_empty() {
        stdout.trim()
    } else {
        stderr.trim()
    };
    anyhow!("{said} ({})", out.status)
}

async fn log_tail(path: &str) -> String {
    const LINES: usize = 15;
    match tokio::fs::read(path).await {
        Ok(log) => {
            let log = String::from_utf8_lossy(&log);
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(LINES)..].join("\n")
        }
        Err(error) => format!("(could not read it: {error})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory under /tmp that the `postgres` user can traverse, removed afterwards.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Result<Self> {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .subsec_nanos();
            let path = PathBuf::from(format!(
                "/tmp/orderflow-devdb-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir(&path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            Ok(Self(path))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn free_port() -> Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    }

    #[tokio::test]
    async fn a_private_cluster_keeps_its_data_across_restarts_until_started_fresh() -> Result<()> {
        let home = TempDir::new()?;
        let data_dir = home.0.join("pg");
        let port = free_port()?;

        let pg = PrivatePostgres::start(&data_dir, port, false).await?;
        assert_eq!(
            pg.url(),
            format!("postgres://postgres@127.0.0.1:{port}/orderflow")
        );
        assert_eq!(pg.psql(DATABASE, "select 1").await?, "1");
        // The roles' URL goes over the Unix socket (no server address), to the same database.
        assert_ne!(pg.local_url(), pg.url());
        let mut local = <sqlx::PgConnection as sqlx::Connection>::connect(pg.local_url()).await?;
        let (over_socket, database): (bool, String) =
            sqlx::query_as("select inet_server_addr() is null, current_database()")
                .fetch_one(&mut local)
                .await?;
        assert!(over_socket, "{} connected over TCP", pg.local_url());
        assert_eq!(database, DATABASE);
        sqlx::Connection::close(local).await?;
        pg.psql(
            DATABASE,
            "create table kept (id int); insert into kept values (42)",
        )
        .await?;
        pg.stop().await?;

        let pg = PrivatePostgres::start(&data_dir, port, false).await?;
        assert_eq!(pg.psql(DATABASE, "select id from kept").await?, "42");
        pg.stop().await?;

        let pg = PrivatePostgres::start(&data_dir, port, true).await?;
        let kept = "select count(*) from pg_tables where tablename = 'kept'";
        assert_eq!(pg.psql(DATABASE, kept).await?, "0");
        pg.stop().await?;
        Ok(())
    }
}
