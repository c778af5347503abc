//! `macpool sim` ships in the `macpool` binary, so its normal dependencies must not turn on
//! tokio's `test-util` (paused time, a mock clock): the simulator's hosts pause through
//! `Hypervisor::pause` instead (ARCHITECTURE.md, issue 20).

fn tokio_features(manifest: &toml::Table, section: &str) -> Vec<String> {
    let tokio = &manifest[section]["tokio"];
    tokio
        .get("features")
        .and_then(|f| f.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn neither_the_simulator_nor_the_workspace_turns_on_tokio_test_util() {
    let sim: toml::Table = include_str!("../Cargo.toml").parse().unwrap();
    let features = tokio_features(&sim, "dependencies");
    assert!(!features.is_empty(), "the simulator names tokio's features");
    assert!(
        !features.iter().any(|f| f == "test-util"),
        "macpool-sim's [dependencies] turn on tokio test-util: {features:?}"
    );
    let root: toml::Table = include_str!("../../../Cargo.toml").parse().unwrap();
    let workspace = root["workspace"].as_table().unwrap();
    let inherited = tokio_features(workspace, "dependencies");
    assert!(
        !inherited.iter().any(|f| f == "test-util"),
        "the workspace's tokio turns on test-util: {inherited:?}"
    );
}
