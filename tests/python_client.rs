//! The Python client (`clients/python`, module `sprite_tasks`) against the
//! real binary: runs its `unittest` suite, whose tests each start this
//! build's `sprite-tasksd` on a socket and database of their own, and
//! checks that every test ran and passed. Also checks that the package is
//! written in the grammar of its oldest supported Python (3.9), which the
//! python3 here may be newer than.

use std::path::{Path, PathBuf};
use std::process::Command;

fn package() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python")
}

/// Tests in `clients/python/tests/test_client.py`: a suite that ran fewer
/// lost some on the way (an import error, a class not collected).
const PYTHON_TESTS: usize = 19;

#[test]
fn the_python_client_passes_its_tests_against_the_real_daemon() {
    let output = Command::new("python3")
        .args(["-m", "unittest", "discover", "-v", "-s", "tests"])
        .current_dir(package())
        .env("SPRITE_TASKSD", env!("CARGO_BIN_EXE_sprite-tasksd"))
        .env("SPRITE_TEST_DB_DIR", env!("CARGO_TARGET_TMPDIR"))
        .env_remove("SPRITE_API_SOCKET")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 is installed (scripts/test.sh checks)");
    // unittest reports on stderr.
    let report = String::from_utf8_lossy(&output.stderr);
    println!("{report}");
    assert!(
        output.status.success(),
        "the Python tests failed:\n{report}"
    );
    let ran: usize = report
        .lines()
        .find_map(|line| line.strip_prefix("Ran ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no \"Ran N tests\" line:\n{report}"));
    assert_eq!(ran, PYTHON_TESTS, "every Python test ran");
    let verdict = report.lines().rev().find(|line| !line.is_empty());
    assert_eq!(verdict, Some("OK"), "none skipped or expected to fail");
    let passed = report
        .lines()
        .filter(|line| line.ends_with(" ... ok"))
        .count();
    assert_eq!(passed, PYTHON_TESTS, "each test reported ok");
}

#[test]
fn the_python_client_is_written_for_python_3_9() {
    const CHECK: &str = r#"
import ast, pathlib, sys
files = sorted(pathlib.Path(".").rglob("*.py"))
assert files, "no Python files"
for path in files:
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))
print(len(files))
"#;
    let output = Command::new("python3")
        .args(["-c", CHECK])
        .current_dir(package())
        .output()
        .expect("python3 is installed (scripts/test.sh checks)");
    assert!(
        output.status.success(),
        "not Python 3.9 grammar: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let checked: usize = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(checked >= 5, "{checked} files checked");
    let pyproject = std::fs::read_to_string(package().join("pyproject.toml")).unwrap();
    assert!(pyproject.contains("requires-python = \">=3.9\""));
    assert!(
        pyproject.contains("dependencies = []"),
        "the standard library only"
    );
}
