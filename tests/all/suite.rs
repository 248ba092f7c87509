//! Checks on the test suite and the shipped files themselves.

use caisson_tests::root;

/// Every guest program under tests/components has a host test that runs
/// it (STYLE: a guest test program without a host test is dead weight).
#[test]
fn every_test_component_is_exercised() {
    let bins = root().join("tests/components/src/bin");
    let mut sources = String::new();
    for entry in std::fs::read_dir(root().join("tests/all"))
        .unwrap()
        .flatten()
    {
        sources.push_str(&std::fs::read_to_string(entry.path()).unwrap());
    }
    let mut unused = Vec::new();
    for entry in std::fs::read_dir(bins).unwrap().flatten() {
        let name = entry
            .path()
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .replace('_', "-");
        if !sources.contains(&format!("\"{name}\"")) {
            unused.push(name);
        }
    }
    assert!(
        unused.is_empty(),
        "test components no test runs: {unused:?}"
    );
}

/// The example configuration in the README parses with today's schema.
#[test]
fn the_example_config_parses() {
    let config = caisson_runtime::Config::from_file(&root().join("examples/caisson.toml")).unwrap();
    assert!(config.objects.contains_key("raw"));
    assert!(config.sql.contains_key("warehouse"));
    assert_eq!(config.limits.timeout, std::time::Duration::from_secs(300));
}
