//! Conformance with clients this project did not write: boto3 and the AWS
//! SDK for JavaScript v3 (on its default HTTP/2 request handler) call every
//! operation, every injected fault (before and inside streams) and every
//! validation case of `conformance/cases.json` against an emulator on
//! 127.0.0.1, and check the exception class, status, code, message,
//! modelled members and request id each surfaces.
//!
//! The clients are installed under the target directory (a virtualenv with
//! the pinned `conformance/requirements.txt`, an npm tree from
//! `conformance/package-lock.json`). Where Python (with venv and pip), Node
//! (with npm) or the package registries cannot be had, a test prints one
//! `skipped: ...` line and passes, unless `REQUIRE_EXTERNAL_TESTS=1`, where
//! it fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::process::Command;
use tower_bedrock_emulator::{Emulator, EmulatorConfig};

/// Bound on every install step and on each client's run.
const STEP_TIMEOUT: Duration = Duration::from_secs(300);
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance")
}

fn work_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance")
}

/// Skips (or, under `REQUIRE_EXTERNAL_TESTS=1`, fails) with one line.
fn skip(suite: &str, missing: &str, how: &str) {
    let missing = missing.replace('\n', " | ");
    let line = format!("skipped: {suite}: {missing}; {how}");
    if std::env::var("REQUIRE_EXTERNAL_TESTS").as_deref() == Ok("1") {
        panic!("{line} (REQUIRE_EXTERNAL_TESTS=1)");
    }
    // Written to the process's stderr directly, not through the test
    // harness's capture, so that `cargo test` shows it.
    let _ = writeln!(std::io::stderr(), "{line}");
}

async fn run(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let shown = format!("{cmd:?}");
    match tokio::time::timeout(limit, cmd.output()).await {
        Err(_) => Err(format!("{shown} did not finish within {limit:?}")),
        Ok(Err(e)) => Err(format!("{shown}: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(out),
        Ok(Ok(out)) => Err(format!(
            "{shown} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            tail(&out.stderr)
        )),
    }
}

fn tail(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// A stable name for the installed tree of `manifest` (FNV-1a of its bytes).
fn tag(manifest: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in manifest {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Installs into a fresh directory and renames it into place, so that two
/// test runs at once never see half an install.
async fn install_once<F, Fut>(dest: &Path, install: F) -> Result<(), String>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    if dest.exists() {
        return Ok(());
    }
    let staging = dest.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
    let result = install(staging.clone()).await;
    if result.is_ok() && std::fs::rename(&staging, dest).is_err() && !dest.exists() {
        return Err(format!("cannot move {} into place", staging.display()));
    }
    let _ = std::fs::remove_dir_all(&staging);
    result
}

async fn start() -> tower_bedrock_emulator::EmulatorHandle {
    let config = EmulatorConfig::builder().output_tokens(12).build().unwrap();
    Emulator::start(config).await.expect("emulator starts")
}

fn check(client: &str, out: Result<Output, String>) {
    match out {
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            eprint!("{stdout}");
            assert!(stdout.contains("cases pass"), "{client}: no summary");
        }
        Err(e) => panic!("{client} conformance failed: {e}"),
    }
}

async fn python_env() -> Result<PathBuf, (String, &'static str)> {
    let how = "install python3 with the venv module (apt-get install python3-venv) and let pip reach PyPI";
    let requirements = conformance_dir().join("requirements.txt");
    let manifest = std::fs::read(&requirements).expect("requirements.txt");
    let venv = work_dir().join(format!("venv-{}", tag(&manifest)));
    if run(Command::new("python3").arg("--version"), STEP_TIMEOUT)
        .await
        .is_err()
    {
        return Err(("python3 not found".into(), how));
    }
    let built = install_once(&venv, |dir| async move {
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&dir),
            STEP_TIMEOUT,
        )
        .await?;
        run(
            Command::new(dir.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                // Fail fast where PyPI cannot be reached.
                .args(["--timeout", "10", "--retries", "1", "-r"])
                .arg(&requirements),
            STEP_TIMEOUT,
        )
        .await?;
        // Only `bin/python` is used after the rename (the virtualenv's
        // scripts name the staging path; the interpreter finds its
        // `pyvenv.cfg` next to itself).
        Ok(())
    })
    .await;
    built.map_err(|e| (format!("cannot build the boto3 virtualenv ({e})"), how))?;
    Ok(venv.join("bin/python"))
}

async fn node_env() -> Result<PathBuf, (String, &'static str)> {
    let how = "install node (18 or later) and npm (apt-get install nodejs npm) and let npm reach its registry";
    match run(Command::new("node").arg("--version"), STEP_TIMEOUT).await {
        Ok(out) => {
            let v = String::from_utf8_lossy(&out.stdout);
            let major: u32 = v
                .trim()
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            if major < 18 {
                return Err((format!("node {} is older than 18", v.trim()), how));
            }
        }
        Err(_) => return Err(("node not found".into(), how)),
    }
    let lock = std::fs::read(conformance_dir().join("package-lock.json")).expect("lock file");
    let tree = work_dir().join(format!("js-{}", tag(&lock)));
    let built = install_once(&tree, |dir| async move {
        for f in ["package.json", "package-lock.json"] {
            std::fs::copy(conformance_dir().join(f), dir.join(f))
                .map_err(|e| format!("copy {f}: {e}"))?;
        }
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                // Fail fast where the registry cannot be reached.
                .args(["--fetch-retries=1", "--fetch-timeout=10000"])
                .current_dir(&dir),
            STEP_TIMEOUT,
        )
        .await?;
        Ok(())
    })
    .await;
    built.map_err(|e| (format!("cannot install the JavaScript SDK ({e})"), how))?;
    // The script runs from the tree so that node resolves the SDK there.
    let script = tree.join("js_client.mjs");
    std::fs::copy(conformance_dir().join("js_client.mjs"), &script).expect("copy the JS client");
    Ok(script)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_gets_what_bedrock_would_answer() {
    let python = match python_env().await {
        Ok(p) => p,
        Err((missing, how)) => return skip("emulator conformance (boto3)", &missing, how),
    };
    let emu = start().await;
    let out = run(
        Command::new(python)
            .arg(conformance_dir().join("boto3_client.py"))
            .arg(emu.endpoint_url())
            .arg(conformance_dir().join("cases.json")),
        RUN_TIMEOUT,
    )
    .await;
    check("boto3", out);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_sdk_gets_what_bedrock_would_answer() {
    let script = match node_env().await {
        Ok(p) => p,
        Err((missing, how)) => {
            return skip("emulator conformance (JavaScript SDK)", &missing, how);
        }
    };
    let emu = start().await;
    let out = run(
        Command::new("node")
            .arg("--no-warnings")
            .arg(&script)
            .arg(emu.endpoint_url())
            .arg(conformance_dir().join("cases.json"))
            .current_dir(script.parent().expect("tree")),
        RUN_TIMEOUT,
    )
    .await;
    check("JavaScript SDK", out);
    emu.shutdown().await;
}
