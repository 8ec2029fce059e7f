//! The real binary: the daemon spawned as a child process (crash, signal and exit-code
//! tests) and one-shot commands (`check`, `route`, `init`, the admin CLI).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The real `hookrouter` binary running as a child process.
pub(crate) struct DaemonProcess {
    pub(crate) addr: SocketAddr,
    /// The admin API's address, from the same log line.
    pub(crate) admin_addr: Option<SocketAddr>,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl DaemonProcess {
    /// Spawns `hookrouter serve --config CONFIG` and waits until it logs that it is ready.
    pub(crate) fn spawn(config: &Path) -> DaemonProcess {
        Self::spawn_with(config, &[], &[])
    }

    /// Like [`DaemonProcess::spawn`] with extra arguments before `serve` (such as
    /// `--log-format json`) and extra environment variables (such as `NOTIFY_SOCKET`).
    pub(crate) fn spawn_with(config: &Path, args: &[&str], env: &[(&str, &str)]) -> DaemonProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hookrouter"));
        command.args(args);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("HOOKROUTER_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hookrouter");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Into the log before readiness is signalled, so the ready line is in
                // `log()` once `spawn` returns (a test may look for it at once).
                {
                    let mut l = sink.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
                if line.contains("hookrouter is ready") {
                    if let Some(tx) = tx.take() {
                        // Text (`addr=...`) or JSON (`"addr":"..."`) logs.
                        let find = |name: &str| {
                            line.split(|c: char| c.is_whitespace() || c == ',')
                                .find_map(|w| {
                                    w.strip_prefix(&format!("{name}="))
                                        .or_else(|| w.strip_prefix(&format!("\"{name}\":")))
                                })
                                .map(|a| a.trim_matches(|c| c == '"' || c == '}'))
                                .and_then(|a| a.parse::<SocketAddr>().ok())
                        };
                        let _ = tx.send(find("addr").map(|a| (a, find("admin_addr"))));
                    }
                }
            }
        });
        let (addr, admin_addr) = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(addrs)) => addrs,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "hookrouter did not become ready ({other:?}); log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        DaemonProcess {
            addr,
            admin_addr,
            child,
            log,
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `kill -9`: no chance to flush or clean up.
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit by itself; `None` if it is still running.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits (up to 20 s) for the exit status.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                self.kill9();
                panic!(
                    "hookrouter did not exit within 20 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One run of the binary as a command (`check`, `route`, `init`, the admin CLI), built up
/// then run to completion with [`Cli::output`]. `HOOKROUTER_CONFIG` is always removed, so a
/// developer's own setting never leaks in.
pub(crate) struct Cli {
    command: Command,
    stdin: Option<Vec<u8>>,
}

/// `hookrouter ARGS` (see [`Cli`]).
pub(crate) fn hookrouter(args: &[&str]) -> Cli {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookrouter"));
    command.args(args).env_remove("HOOKROUTER_CONFIG");
    Cli {
        command,
        stdin: None,
    }
}

impl Cli {
    /// Writes `bytes` to its standard input, then closes it (otherwise stdin is empty).
    pub(crate) fn stdin(mut self, bytes: &[u8]) -> Cli {
        self.stdin = Some(bytes.to_vec());
        self
    }

    /// Sets environment variables.
    pub(crate) fn envs(mut self, vars: &[(&str, &str)]) -> Cli {
        self.command.envs(vars.iter().copied());
        self
    }

    /// Removes inherited environment variables (such as `JOURNAL_STREAM`).
    pub(crate) fn env_remove(mut self, names: &[&str]) -> Cli {
        for name in names {
            self.command.env_remove(name);
        }
        self
    }

    /// The command itself, for what the builder does not cover (a working directory, a
    /// cleared environment).
    pub(crate) fn command(&mut self) -> &mut Command {
        &mut self.command
    }

    /// Runs it to completion: exit status, standard output and error.
    pub(crate) fn output(mut self) -> Output {
        self.command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let Some(input) = self.stdin else {
            return self
                .command
                .stdin(Stdio::null())
                .output()
                .expect("run hookrouter");
        };
        let mut child = self
            .command
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn hookrouter");
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(&input).expect("write stdin");
        drop(pipe);
        child.wait_with_output().expect("wait")
    }
}

/// Output bytes as text (lossy: a test's message must show what came, whatever it is).
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The operator CLI against a running daemon, off the async test's threads: (exit code,
/// stdout, stderr). `HOOKROUTER_ADMIN` and `HOOKROUTER_ADMIN_TOKEN` are removed, so only
/// the arguments say where and with what token; the CLI logs warnings only.
pub(crate) async fn admin_cli(
    args: impl IntoIterator<Item = impl ToString>,
) -> (i32, String, String) {
    let args: Vec<String> = args.into_iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = hookrouter(&args)
            .env_remove(&["HOOKROUTER_ADMIN", "HOOKROUTER_ADMIN_TOKEN"])
            .envs(&[("RUST_LOG", "warn")])
            .output();
        (
            out.status.code().unwrap_or(-1),
            text(&out.stdout),
            text(&out.stderr),
        )
    })
    .await
    .expect("the CLI runs")
}
