//! The crate graph two ways: as cargo resolves the manifests (`cargo metadata --no-deps`) and as
//! `docs/ARCHITECTURE.md` draws it in the fenced block under its "Crate graph" heading, one
//! arrow a line: `a → b` (a normal dependency) or `a ⇢ b` (a dev-dependency only).

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;

/// The heading whose first fenced block holds the arrows.
pub const GRAPH_HEADING: &str = "Crate graph";

/// A workspace member, as `cargo metadata` describes it.
#[derive(Debug, Clone)]
pub struct Package {
    pub name: String,
    /// The directory of its `Cargo.toml`.
    pub dir: PathBuf,
    /// It has a library target (the env rule applies to it).
    pub has_lib: bool,
    pub deps: Vec<Dep>,
}

/// One declared dependency.
#[derive(Debug, Clone)]
pub struct Dep {
    /// The package name (`posthog-client`).
    pub name: String,
    /// The name the code uses (`posthog_client`, or the `package = …` rename).
    pub ident: String,
    pub kind: DepKind,
    pub optional: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DepKind {
    /// `[dependencies]` (also target-specific ones).
    Normal,
    /// `[build-dependencies]`.
    Build,
    /// `[dev-dependencies]`.
    Dev,
}

/// An arrow between two workspace crates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// A dev-dependency only (`⇢`), else a normal one (`→`).
    pub dev: bool,
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let arrow = if self.dev { '⇢' } else { '→' };
        write!(f, "{} {arrow} {}", self.from, self.to)
    }
}

/// Runs `cargo metadata --format-version 1 --no-deps` in `root` and reads the members.
pub fn workspace(root: &Path) -> anyhow::Result<Vec<Package>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let out = std::process::Command::new(cargo)
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let metadata: Value = serde_json::from_slice(&out.stdout).context("cargo metadata's JSON")?;
    packages(&metadata)
}

/// The workspace members of a `cargo metadata` document.
pub fn packages(metadata: &Value) -> anyhow::Result<Vec<Package>> {
    let members: BTreeSet<&str> = metadata["workspace_members"]
        .as_array()
        .context("cargo metadata without workspace_members")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut packages = Vec::new();
    for p in metadata["packages"].as_array().into_iter().flatten() {
        if !p["id"].as_str().is_some_and(|id| members.contains(id)) {
            continue;
        }
        let manifest = PathBuf::from(p["manifest_path"].as_str().context("manifest_path")?);
        let has_lib = p["targets"].as_array().into_iter().flatten().any(|t| {
            t["kind"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| matches!(k.as_str(), Some("lib" | "rlib" | "proc-macro")))
        });
        packages.push(Package {
            name: p["name"].as_str().context("package name")?.to_owned(),
            dir: manifest.parent().context("manifest dir")?.to_path_buf(),
            has_lib,
            deps: p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .map(dep)
                .collect::<anyhow::Result<_>>()?,
        });
    }
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(packages)
}

fn dep(d: &Value) -> anyhow::Result<Dep> {
    let name = d["name"].as_str().context("dependency name")?.to_owned();
    let ident = d["rename"].as_str().unwrap_or(&name).replace('-', "_");
    let kind = match d["kind"].as_str() {
        None => DepKind::Normal,
        Some("build") => DepKind::Build,
        Some("dev") => DepKind::Dev,
        Some(other) => bail!("dependency {name} of unknown kind {other}"),
    };
    Ok(Dep {
        name,
        ident,
        kind,
        optional: d["optional"].as_bool().unwrap_or(false),
    })
}

/// The arrows between workspace members that the manifests declare: normal and build
/// dependencies as `→`, dev-dependencies that are not also normal ones as `⇢`.
pub fn declared_edges(packages: &[Package]) -> BTreeSet<Edge> {
    let members: BTreeSet<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    let mut edges = BTreeSet::new();
    for p in packages {
        let internal = p.deps.iter().filter(|d| members.contains(d.name.as_str()));
        let normal: BTreeSet<&str> = internal
            .clone()
            .filter(|d| d.kind != DepKind::Dev)
            .map(|d| d.name.as_str())
            .collect();
        for d in internal {
            let dev = !normal.contains(d.name.as_str());
            edges.insert(Edge {
                from: p.name.clone(),
                to: d.name.clone(),
                dev,
            });
        }
    }
    edges
}

/// The arrows drawn in the "Crate graph" block of `doc`, or what is wrong with the block.
pub fn drawn_edges(doc: &str) -> Result<BTreeSet<Edge>, String> {
    let mut lines = doc.lines().enumerate();
    lines
        .by_ref()
        .find(|(_, l)| l.starts_with('#') && l.trim_start_matches('#').trim() == GRAPH_HEADING)
        .ok_or_else(|| format!("no \"## {GRAPH_HEADING}\" heading"))?;
    lines
        .by_ref()
        .find(|(_, l)| l.trim_start().starts_with("```"))
        .ok_or_else(|| format!("no fenced block under \"## {GRAPH_HEADING}\""))?;
    let mut edges = BTreeSet::new();
    for (i, line) in lines {
        let line = line.trim();
        if line.starts_with("```") {
            return Ok(edges);
        }
        if line.is_empty() {
            continue;
        }
        let (arrow, dev) = if line.contains('⇢') {
            ('⇢', true)
        } else {
            ('→', false)
        };
        let parsed = line.split_once(arrow).and_then(|(from, to)| {
            let (from, to) = (from.trim(), to.trim());
            let word = |s: &str| !s.is_empty() && !s.contains(char::is_whitespace);
            (word(from) && word(to)).then(|| Edge {
                from: from.to_owned(),
                to: to.to_owned(),
                dev,
            })
        });
        match parsed {
            Some(edge) => {
                edges.insert(edge);
            }
            None => {
                return Err(format!(
                    "line {}: `{line}` is not `crate → crate` or `crate ⇢ crate`",
                    i + 1
                ));
            }
        }
    }
    Err(format!(
        "the fenced block under \"## {GRAPH_HEADING}\" is not closed"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn edge(from: &str, to: &str, dev: bool) -> Edge {
        Edge {
            from: from.into(),
            to: to.into(),
            dev,
        }
    }

    #[test]
    fn the_block_under_the_heading_is_read() {
        let doc = "# A\n\n```\nnot → this\n```\n\n## Crate graph\n\nText.\n\n```text\na → b\n\nc ⇢ b\n```\n";
        let edges = drawn_edges(doc).unwrap();
        assert_eq!(
            edges,
            BTreeSet::from([edge("a", "b", false), edge("c", "b", true)])
        );
        assert!(drawn_edges("## Crate graph\n```\na -> b\n```\n").is_err());
        assert!(drawn_edges("## Crate graph\n```\na → b\n").is_err());
        assert!(drawn_edges("no heading").is_err());
    }

    #[test]
    fn normal_dependencies_win_over_dev_ones_and_outside_crates_are_ignored() {
        let metadata = json!({
            "workspace_members": ["a-id", "b-id", "m-id"],
            "packages": [
                {"id": "a-id", "name": "a", "manifest_path": "/w/a/Cargo.toml",
                 "targets": [{"kind": ["bin"]}],
                 "dependencies": [
                    {"name": "b", "kind": null},
                    {"name": "b", "kind": "dev"},
                    {"name": "m", "kind": "dev"},
                    {"name": "serde", "kind": null}]},
                {"id": "b-id", "name": "b", "manifest_path": "/w/b/Cargo.toml",
                 "targets": [{"kind": ["lib"]}], "dependencies": []},
                {"id": "m-id", "name": "m", "manifest_path": "/w/m/Cargo.toml",
                 "targets": [{"kind": ["lib"]}],
                 "dependencies": [{"name": "flate-two", "rename": "flate", "kind": null, "optional": true}]}
            ]
        });
        let packages = packages(&metadata).unwrap();
        assert_eq!(
            declared_edges(&packages),
            BTreeSet::from([edge("a", "b", false), edge("a", "m", true)])
        );
        assert!(!packages[0].has_lib && packages[1].has_lib);
        let flate = &packages[2].deps[0];
        assert_eq!((flate.ident.as_str(), flate.optional), ("flate", true));
    }
}
