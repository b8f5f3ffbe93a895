//! Installing like a tool: completion scripts for each shell and man pages
//! for both binaries, generated from the same clap definitions the
//! programs parse with.

use std::path::PathBuf;
use std::process::{Command, Output};

const SPRITE_ENV: &str = env!("CARGO_BIN_EXE_sprite-env");
const SPRITE_TASKSD: &str = env!("CARGO_BIN_EXE_sprite-tasksd");

fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program).args(args).output().expect("run");
    assert!(output.status.success(), "{program} {args:?}: {output:?}");
    output
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[test]
fn completions_for_each_shell_know_every_command() {
    // (shell, how the shell itself checks the script's syntax)
    for (shell, check) in [("bash", "-n"), ("zsh", "-n"), ("fish", "--no-execute")] {
        let script = run(SPRITE_ENV, &["completions", shell]).stdout;
        let text = String::from_utf8(script.clone()).expect("UTF-8");
        for word in ["sprite-env", "wait-idle", "hold", "timeout", "completions"] {
            assert!(text.contains(word), "{shell} completions lack {word:?}");
        }
        match find_tool(shell) {
            Some(interpreter) => {
                let dir = tempfile::tempdir().unwrap();
                let file = dir.path().join("completions");
                std::fs::write(&file, &script).unwrap();
                let checked = Command::new(&interpreter)
                    .arg(check)
                    .arg(&file)
                    .output()
                    .unwrap();
                assert!(checked.status.success(), "{shell} {check}: {checked:?}");
                eprintln!(
                    "{shell} completions: generated and parsed by {}",
                    interpreter.display()
                );
            }
            None => {
                eprintln!("{shell} completions: generated; {shell} is not installed to parse them")
            }
        }
    }
    let refused = Command::new(SPRITE_ENV)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
}

#[test]
fn man_pages_for_both_binaries() {
    let daemon = String::from_utf8(run(SPRITE_TASKSD, &["--man"]).stdout).unwrap();
    assert!(daemon.contains(".TH sprite-tasksd 1"), "{daemon}");
    for option in ["on\\-idle\\-after", "while\\-held", "socket"] {
        assert!(daemon.contains(option), "sprite-tasksd(1) lacks {option}");
    }
    let client = String::from_utf8(run(SPRITE_ENV, &["man"]).stdout).unwrap();
    assert!(client.contains(".TH sprite-env 1"), "{client}");
    assert!(client.contains("completions"), "{client}");

    let dir = tempfile::tempdir().unwrap();
    run(SPRITE_ENV, &["man", "--dir", dir.path().to_str().unwrap()]);
    for page in [
        "sprite-env.1",
        "sprite-env-tasks.1",
        "sprite-env-tasks-wait-idle.1",
        "sprite-env-tasks-hold.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text}"
        );
    }
    let wait = std::fs::read_to_string(dir.path().join("sprite-env-tasks-wait-idle.1")).unwrap();
    assert!(wait.contains("\\-\\-timeout"), "{wait}");
}
