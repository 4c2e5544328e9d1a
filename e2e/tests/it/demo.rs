//! The README's demo (`./run.sh`) runs to completion: `demo --no-wait` brings up its own stack
//! (anvil, EntryPoint v0.7, contracts, Alto, ta-sim, companion), walks wallet → agent →
//! bounded session → intents (an ETH and a token payment land, a token payment over the cap is
//! refused with `token_over_budget`), and stops everything.

use std::process::Command;

#[test]
fn demo_runs_to_completion_and_stops() {
    let help = Command::new(env!("CARGO_BIN_EXE_demo"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--no-wait"));
    let bad = Command::new(env!("CARGO_BIN_EXE_demo"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));

    let state = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_demo"))
        .arg("--no-wait")
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for expected in [
        "smart account",
        "agent address",
        "owner userOpHash",
        "userOpHash",
        "status                 included",
        "recipient balance",
        "recipient TEST         40.000000000000000000 TEST",
        "code                   token_over_budget",
        "available              60.000000000000000000 TEST",
        "Demo complete",
        "Stopped.",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    // The credential is never printed.
    assert!(!stdout.contains("eyJ"), "a JWT was printed:\n{stdout}");

    // What was started, machine-readable, beside the secrets (files readable by the user only).
    assert!(stdout.contains("What was started, as JSON: "), "{stdout}");
    let stack: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.path().join("stack.json")).unwrap()).unwrap();
    assert!(stack["companion"]["url"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    assert!(stack["chain"]["rpcUrl"]
        .as_str()
        .unwrap()
        .starts_with("http://"));
    assert!(stack["account"].as_str().unwrap().starts_with("0x"));
    assert!(stack["agent"]["keyId"].as_str().unwrap().contains(':'));
    assert!(stack["agent"]["address"]
        .as_str()
        .unwrap()
        .starts_with("0x"));
    for file in [
        &stack["agent"]["credentialFile"],
        &stack["companion"]["apiKeyFile"],
    ] {
        let path = std::path::Path::new(file.as_str().unwrap());
        assert!(path.starts_with(state.path()), "{path:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{path:?} is readable by others");
        }
    }
    assert_eq!(stack["mcp"]["args"][0], "--credential-file");
    assert_eq!(stack["mcp"]["args"][1], stack["agent"]["credentialFile"]);
}
