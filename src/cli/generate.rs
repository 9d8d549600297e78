//! Man pages and shell completion scripts, generated from the argument definitions
//! themselves so that they can never disagree with what the parser accepts.

use clap::CommandFactory;

use super::{Cli, ShellArg};

/// Subcommands with a page of their own, and that page's name.
const PAGES: [(&str, &str); 4] = [
    ("sync", "s3mirror-sync"),
    ("verify", "s3mirror-verify"),
    ("plan", "s3mirror-plan"),
    ("mount", "s3mirror-mount"),
];

/// The completion script for `shell`.
pub fn completion_script(shell: ShellArg) -> Vec<u8> {
    let shell = match shell {
        ShellArg::Bash => clap_complete::Shell::Bash,
        ShellArg::Zsh => clap_complete::Shell::Zsh,
        ShellArg::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "s3mirror", &mut out);
    out
}

/// The roff source of s3mirror(1), or with a subcommand of s3mirror-SUBCOMMAND(1).
pub fn man_page(subcommand: Option<&str>) -> std::io::Result<Vec<u8>> {
    let mut root = Cli::command();
    root.build();
    let command = match subcommand {
        None => root,
        Some(name) => {
            let (_, page) = PAGES
                .iter()
                .find(|(sub, _)| *sub == name)
                .ok_or_else(|| std::io::Error::other(format!("no page for {name:?}")))?;
            root.find_subcommand(name)
                .expect("every page is a subcommand")
                .clone()
                .name(*page)
                .version(env!("CARGO_PKG_VERSION"))
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(command)
        .section("1")
        .manual("s3mirror manual")
        .source(concat!("s3mirror ", env!("CARGO_PKG_VERSION")))
        .render(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_renders_and_names_its_options() {
        let main = String::from_utf8(man_page(None).unwrap()).unwrap();
        assert!(main.contains(".TH s3mirror 1"), "{main}");
        assert!(main.contains("s3mirror\\-sync(1)"), "{main}");
        let sync = String::from_utf8(man_page(Some("sync")).unwrap()).unwrap();
        assert!(sync.contains("S3MIRROR_THREADS"), "{sync}");
        assert!(sync.contains("\\-\\-metrics\\-file"), "{sync}");
        for (name, _) in PAGES {
            assert!(!man_page(Some(name)).unwrap().is_empty());
        }
        assert!(man_page(Some("nonsense")).is_err());
    }

    #[test]
    fn completions_know_the_subcommands_and_options() {
        for shell in [ShellArg::Bash, ShellArg::Zsh, ShellArg::Fish] {
            let script = String::from_utf8(completion_script(shell)).unwrap();
            assert!(script.contains("verify"), "{shell:?}");
            assert!(script.contains("metrics-file"), "{shell:?}");
        }
    }
}
