//! Temporary directories that say which test made them.

/// A fresh directory under the system temp dir, removed on drop; `tag`
/// starts its name, to tell in `/tmp` which test left it.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = tempfile::Builder::new().prefix(&format!("borealis-test-{tag}-")).tempdir().expect("create temp dir");
        Self(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}
