//! The manual pages and shell completions of a binary, generated from its
//! clap definition (`clap_mangen`, `clap_complete`), so `--help`, `man` and
//! tab completion never disagree. Both binaries expose this through a hidden
//! option that the package build calls (docs/distribution.md §4); nothing
//! here runs in normal operation.

use std::path::{Path, PathBuf};

use clap_complete::Shell;

/// Writes into `dir` (created if missing) the man page `NAME.SECTION` and
/// the completions `NAME.bash`, `_NAME` (zsh) and `NAME.fish` of `cmd`,
/// where NAME is the command's name. Returns the files written.
///
/// # Errors
/// When `dir` cannot be created or a file cannot be written.
pub fn write(cmd: clap::Command, section: &str, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let name = cmd.get_name().to_string();
    let mut cmd = cmd.bin_name(&name);
    let mut written = Vec::new();

    let page = dir.join(format!("{name}.{section}"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section(section)
        .render(&mut buf)?;
    std::fs::write(&page, buf)?;
    written.push(page);

    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut cmd, &name, dir)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_man_page_and_three_completions() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = clap::Command::new("demo-tool")
            .about("Does one thing")
            .after_help("Exit status (sysexits.h):\n  78  a configuration problem")
            .arg(clap::Arg::new("config").long("config").help("Config file"))
            .subcommand(clap::Command::new("check-config").about("Validates"));
        let files = write(cmd, "8", dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "demo-tool.8",
                "demo-tool.bash",
                "_demo-tool",
                "demo-tool.fish"
            ]
        );
        let page = std::fs::read_to_string(dir.path().join("demo-tool.8")).unwrap();
        assert!(page.starts_with(".ie"), "roff: {}", &page[..40]);
        assert!(page.contains(".TH demo-tool 8"), "{page}");
        assert!(page.contains("Config file"));
        assert!(page.contains("78"), "exit status missing: {page}");
        let bash = std::fs::read_to_string(dir.path().join("demo-tool.bash")).unwrap();
        assert!(bash.contains("--config") && bash.contains("check-config"));
        let fish = std::fs::read_to_string(dir.path().join("demo-tool.fish")).unwrap();
        assert!(fish.contains("complete -c demo-tool"));
    }
}
