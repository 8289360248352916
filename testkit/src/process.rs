//! Child processes: spawning them tied to this process or detached from it,
//! stopping them, and small Linux process helpers.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a spawned component lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// Killed (SIGKILL) when this process exits, however it exits.
    TiedToProcess,
    /// In its own session, outliving this process (for `cluster up`).
    Detached,
}

/// One running control-plane process.
pub(crate) struct Component {
    /// `etcd`, `kube-apiserver` or `kube-controller-manager`.
    pub name: &'static str,
    pub child: Child,
    /// Its combined stdout and stderr.
    pub log: PathBuf,
    /// The executable and arguments it was started with (to start it again).
    pub bin: PathBuf,
    pub args: Vec<String>,
    pub lifetime: Lifetime,
}

impl Component {
    /// Fails, with the tail of its log, when the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}); {}", self.name, log_tail(&self.log));
        }
        Ok(())
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`) to the process.
    pub fn signal(&self, signal: libc::c_int) -> Result<()> {
        // SAFETY: plain kill(2) on our own child's pid.
        if unsafe { libc::kill(self.child.id() as libc::pid_t, signal) } != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("signalling {}", self.name));
        }
        Ok(())
    }

    /// Kills the process and starts it again with its arguments, where each of `overrides`
    /// (`--flag=value`) replaces the argument of the same flag or is appended.
    pub fn restart(&mut self, overrides: &[String]) -> Result<()> {
        self.kill();
        let mut args = self.args.clone();
        for o in overrides {
            let flag = o.split('=').next().unwrap_or(o);
            match args.iter_mut().find(|a| a.split('=').next() == Some(flag)) {
                Some(a) => a.clone_from(o),
                None => args.push(o.clone()),
            }
        }
        *self = spawn(self.name, &self.bin, &args, &self.log, self.lifetime)?;
        Ok(())
    }
}

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, so tied
/// children are forked by one thread that lives as long as the process.
fn spawn_from_spawner_thread(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnJob>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the testkit spawner thread");
        tx
    });
    let (tx, rx) = mpsc::channel();
    spawner
        .send((cmd, tx))
        .map_err(|_| io::Error::other("testkit spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("testkit spawner thread is gone"))?
}

/// Spawns `bin args…` with stdin from /dev/null and stdout and stderr appended to `log`.
pub(crate) fn spawn(
    name: &'static str,
    bin: &Path,
    args: &[String],
    log: &Path,
    lifetime: Lifetime,
) -> Result<Component> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(bin);
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    let child = match lifetime {
        Lifetime::TiedToProcess => {
            let parent = std::process::id() as libc::pid_t;
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // The parent may have died before prctl took effect.
                    if libc::getppid() != parent {
                        libc::_exit(1);
                    }
                    Ok(())
                });
            }
            spawn_from_spawner_thread(cmd)
        }
        Lifetime::Detached => {
            // SAFETY: setsid is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setsid() < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            cmd.spawn()
        }
    }
    .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Component {
        name,
        child,
        log: log.to_path_buf(),
        bin: bin.to_path_buf(),
        args: args.to_vec(),
        lifetime,
    })
}

/// "last lines of LOG:\n…" for error messages.
pub(crate) fn log_tail(log: &Path) -> String {
    const LINES: usize = 40;
    const MAX_LINE: usize = 600;
    match std::fs::read(log) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LINES);
            let tail: Vec<String> = lines[start..]
                .iter()
                .map(|l| {
                    if l.len() > MAX_LINE {
                        let mut end = MAX_LINE;
                        while !l.is_char_boundary(end) {
                            end -= 1;
                        }
                        format!("{}…", &l[..end])
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            format!("last lines of {}:\n{}", log.display(), tail.join("\n"))
        }
        Err(e) => format!("(could not read {}: {e})", log.display()),
    }
}

/// Takes an exclusive `flock` on `path` (created if needed), held until the file is dropped.
pub(crate) fn lock_file(path: &Path) -> Result<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("locking {}", path.display()));
    }
    Ok(file)
}

/// True when `pid` is a live (not zombie) process whose executable is named `name`.
pub(crate) fn pid_runs(pid: i32, name: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S …": the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    if matches!(state, Some('Z') | Some('X') | None) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    Path::new(std::ffi::OsStr::new(
        std::str::from_utf8(argv0).unwrap_or_default(),
    ))
    .file_name()
    .is_some_and(|f| f == name)
}

/// Stops the processes (SIGTERM, then SIGKILL after `grace`), each given as
/// (pid, executable name); pids no longer running that executable are skipped.
pub(crate) fn stop_pids(procs: &[(i32, &str)], grace: Duration) {
    let live: Vec<(i32, &str)> = procs
        .iter()
        .copied()
        .filter(|(pid, name)| pid_runs(*pid, name))
        .collect();
    for (pid, _) in &live {
        // SAFETY: plain kill(2).
        unsafe { libc::kill(*pid, libc::SIGTERM) };
    }
    // From here on only the state counts: an exiting process loses its cmdline
    // before it is gone.
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && live.iter().any(|(pid, _)| pid_exists(*pid)) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for (pid, _) in &live {
        if pid_exists(*pid) {
            // SAFETY: plain kill(2).
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && live.iter().any(|(pid, _)| pid_exists(*pid)) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True when a process with this pid exists (any state but zombie).
pub(crate) fn pid_exists(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        !matches!(state, Some('Z') | Some('X') | None)
    })
}
