//! The example Kubernetes manifests in `deploy/kubernetes/` parse as YAML and have the
//! fields the README's Kubernetes section names (`check.py`, with Python's PyYAML); a
//! manifest that lost one of them is caught.

#![allow(
    clippy::unwrap_used,
    reason = "test peers and helpers panic on failure"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn manifests() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

fn check(dir: &Path) -> std::process::Output {
    Command::new("python3")
        .arg(dir.join("check.py"))
        .output()
        .unwrap_or_else(|e| panic!("python3: {e} (install python3 and PyYAML)"))
}

#[test]
fn manifests_have_what_the_readme_says() {
    let out = check(&manifests());
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The same check on a copy where the Deployment lost its readiness probe's path and
    // went back to one replica: both are named.
    let copy = std::env::temp_dir().join(format!("switchyard-k8s-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy).unwrap();
    for name in ["check.py", "redis.yaml", "proxy.yaml"] {
        std::fs::copy(manifests().join(name), copy.join(name)).unwrap();
    }
    let proxy = std::fs::read_to_string(copy.join("proxy.yaml")).unwrap();
    let broken = proxy
        .replace("replicas: 2", "replicas: 1")
        .replace("path: /_chp_readyz", "path: /_chp_healthz");
    assert_ne!(broken, proxy);
    std::fs::write(copy.join("proxy.yaml"), broken).unwrap();
    let out = check(&copy);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("replicas 2"), "{stdout}");
    assert!(
        stdout.contains("readinessProbe GET /_chp_readyz"),
        "{stdout}"
    );

    std::fs::write(copy.join("redis.yaml"), "kind: [unclosed").unwrap();
    let out = check(&copy);
    assert!(!out.status.success(), "invalid YAML passed");
    std::fs::remove_dir_all(&copy).unwrap();
}
