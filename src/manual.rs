//! The manual pages and shell completions of a binary, generated from its
//! clap definition (`clap_mangen`, `clap_complete`), so `--help`, `man` and
//! tab completion never disagree. Both binaries expose this through a hidden
//! option that the package build calls (docs/distribution.md §4); nothing
//! here runs in normal operation.

use std::path::{Path, PathBuf};

use clap_complete::Shell;

/// Writes into `dir` (created if missing) the man page `NAME.SECTION` of
/// `cmd`, one `NAME-SUB.SECTION` per visible subcommand (the main page
/// refers to them), and the completions `NAME.bash`, `_NAME` (zsh) and
/// `NAME.fish`, where NAME is the command's name. Returns the files
/// written.
///
/// # Errors
/// When `dir` cannot be created or a file cannot be written.
pub fn write(cmd: clap::Command, section: &str, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let name = cmd.get_name().to_string();
    let mut cmd = cmd.bin_name(&name).disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    pages(&cmd, section, dir, &mut written)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        written.push(clap_complete::generate_to(shell, &mut cmd, &name, dir)?);
    }
    Ok(written)
}

/// The page of `cmd`, then those of its visible subcommands.
fn pages(
    cmd: &clap::Command,
    section: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let page = clap_mangen::Man::new(cmd.clone()).section(section);
    let path = dir.join(page.get_filename());
    let mut buf = Vec::new();
    page.render(&mut buf)?;
    std::fs::write(&path, buf)?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages(sub, section, dir, written)?;
    }
    Ok(())
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
            .subcommand(clap::Command::new("check-config").about("Validates"))
            .subcommand(clap::Command::new("secret").hide(true));
        let files = write(cmd, "8", dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "demo-tool.8",
                "demo-tool-check-config.8",
                "demo-tool.bash",
                "_demo-tool",
                "demo-tool.fish"
            ]
        );
        let page = std::fs::read_to_string(dir.path().join("demo-tool.8")).unwrap();
        assert!(page.starts_with(".ie"), "roff: {}", &page[..40]);
        assert!(page.contains(".TH demo-tool 8"), "{page}");
        assert!(page.contains("Config file"));
        assert!(page.contains("demo\\-tool\\-check\\-config(8)"), "{page}");
        let sub = std::fs::read_to_string(dir.path().join("demo-tool-check-config.8")).unwrap();
        assert!(sub.contains("Validates"), "{sub}");
        assert!(page.contains("78"), "exit status missing: {page}");
        let bash = std::fs::read_to_string(dir.path().join("demo-tool.bash")).unwrap();
        assert!(bash.contains("--config") && bash.contains("check-config"));
        let fish = std::fs::read_to_string(dir.path().join("demo-tool.fish")).unwrap();
        assert!(fish.contains("complete -c demo-tool"));
    }
}
