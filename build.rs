//! Records the commit the binary was built from, for `certbound --version`: a report names the
//! exact build, not only the crate version every build of a release shares.
//!
//! `BUILD_GIT_COMMIT` wins when set (a container build has no `.git`: pass it as a build
//! argument; not `CERTBOUND_*`, which certbound reads as configuration); otherwise `git rev-parse --short HEAD`; without git or outside a checkout,
//! `unknown`. A build never fails for want of git.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=BUILD_GIT_COMMIT");
    let commit = std::env::var("BUILD_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            watch_head();
            git(&["rev-parse", "--short", "HEAD"])
        })
        .unwrap_or_else(|| "unknown".to_owned());
    // Not `CERTBOUND_*`: cargo also exports this variable to the processes `cargo test` and
    // `cargo run` start, and certbound reads every `CERTBOUND_*` variable as configuration.
    println!("cargo:rustc-env=BUILD_COMMIT={commit}");
}

/// Reruns this script when HEAD moves: the HEAD file (a checkout), the branch's ref file (a
/// commit) and `packed-refs` (a `git gc`). Only files that exist are named, because cargo reruns
/// a script on every build when a watched path is missing.
fn watch_head() {
    let mut paths = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["rev-parse", "--symbolic-full-name", "HEAD"]) {
        paths.push(git(&["rev-parse", "--git-path", &branch]));
    }
    paths.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    for path in paths.into_iter().flatten() {
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// One line of git's output, or `None` when git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!line.is_empty()).then_some(line)
}
