//! The README's "Source layout" names every source file, so a newcomer's map of the tree
//! stays true: adding a file under src/ without a word there fails here.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
}

#[test]
fn the_readme_layout_names_every_source_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let start = readme
        .find("## Source layout")
        .expect("a Source layout section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let missing: Vec<_> = files
        .iter()
        .filter(|f| !section.contains(f.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md's Source layout does not mention {missing:?}"
    );
}
