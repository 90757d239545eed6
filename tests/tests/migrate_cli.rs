//! `borealis-relay migrate` refuses a source that does not exist.

use borealis_tests::TempDir;
use borealis_tests::postgres::Schema;
use borealis_tests::process::{OutputText, binary};

/// `--from` with a typo: exit 2, a message naming the path, and nothing
/// created (no empty database, no journal files), whether the directory
/// exists or not.
#[test]
fn migrate_from_a_missing_file_fails_and_creates_nothing() {
    let dir = TempDir::new("migrate-typo");
    let schema = Schema::new();
    let typo = dir.path().join("borealsi.db");
    for path in [typo.clone(), std::path::PathBuf::from("/nonexistent/typo.db")] {
        let from = format!("sqlite://{}", path.display());
        let out = std::process::Command::new(binary("borealis-relay"))
            .args(["migrate", "--from", &from, "--to", &schema.database_url()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}{}", out.stdout_text(), out.stderr_text());
        let said = out.stderr_text();
        assert!(said.contains(&format!("no SQLite database at {}", path.display())), "{said}");
        assert!(!out.stdout_text().contains("copied"), "{}", out.stdout_text());
        assert!(!path.exists(), "{} was created", path.display());
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "files created: {left:?}");
}
