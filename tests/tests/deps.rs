//! The drivers' dependency trees stay apart: no Tokio crate under wendy-smol, no smol (or
//! async-io) crate under wendy-tokio, and neither under wendy-driver, the runtime-independent
//! code both share. Checked with `cargo tree`, so CI runs it as a test.

use std::process::Command;

/// The names of the packages in `package`'s normal dependency tree.
fn tree(package: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "-p", package, "-e", "normal", "--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "cargo tree -p {package} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let names: Vec<String> = text.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect();
    assert!(names.iter().any(|n| n == "wendy-proto"), "unexpected cargo tree output:\n{text}");
    names
}

/// True for the crates of the smol runtime.
fn is_smol(name: &str) -> bool {
    matches!(name, "smol" | "async-io" | "async-executor" | "async-net" | "async-global-executor")
}

#[test]
fn smol_driver_has_no_tokio() {
    let names = tree("wendy-smol");
    let bad: Vec<&String> = names.iter().filter(|n| n.starts_with("tokio")).collect();
    assert!(bad.is_empty(), "wendy-smol depends on {bad:?}");
    assert!(names.iter().any(|n| n == "smol"));
}

#[test]
fn tokio_driver_has_no_smol() {
    let names = tree("wendy-tokio");
    let bad: Vec<&String> = names.iter().filter(|n| is_smol(n)).collect();
    assert!(bad.is_empty(), "wendy-tokio depends on {bad:?}");
    assert!(names.iter().any(|n| n == "tokio"));
}

#[test]
fn shared_driver_code_has_no_runtime() {
    let names = tree("wendy-driver");
    let bad: Vec<&String> = names.iter().filter(|n| n.starts_with("tokio") || is_smol(n)).collect();
    assert!(bad.is_empty(), "wendy-driver depends on {bad:?}");
    assert!(names.iter().any(|n| n == "wendy-driver"));
}
