//! `cargo xtask tidy`: what `docs/ARCHITECTURE.md` and the style guide claim about the code,
//! checked against the code. It also runs as an ordinary `#[test]` (below), so `cargo test
//! --workspace` is the whole gate.
//!
//! 1. **Crate graph**: the arrows between workspace crates in `cargo metadata` equal the ones
//!    drawn in ARCHITECTURE.md's "Crate graph" block, and every crate has a code-map section.
//! 2. **No environment, no `unsafe`, no files**: no library target reads the environment
//!    (`std::env`; `env!` is compile time and allowed) or has an `unsafe` block, and the
//!    libraries in [`NO_FILES`] touch no files.
//! 3. **Who may depend on what**: [`ONLY_IN`] (an HTTP client only in `posthog-client`, the
//!    object-store client only in `posthog-storage`, an HTTP server only in the mock) and
//!    `anyhow` only in binaries.
//! 4. **Module docs**: every `src/**/*.rs` (and `build.rs`) opens with a `//!` doc.
//! 5. **No unused dependency**: every `[dependencies]` entry is used by the crate's code,
//!    outside tests, except those in [`UNUSED_ALLOWED`].
//! 6. **Short functions**: no function outside tests is longer than [`MAX_FN_LINES`] lines,
//!    except in [`LONG_FN_EXEMPT_CRATES`] and the declarative tables in [`LONG_FN_ALLOWED`].
//!
//! Code inside `#[cfg(test)]` items, `#[test]` functions, test module files and `tests/` is
//! not held to 2, 5 and 6. Each problem names the file or crate and what to do about it.

mod graph;
mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use graph::{DepKind, Edge, GRAPH_HEADING, Package};
use source::Source;

/// The document whose claims are checked.
const ARCHITECTURE: &str = "docs/ARCHITECTURE.md";

/// Libraries whose section in ARCHITECTURE.md promises they touch no files.
pub const NO_FILES: &[&str] = &[
    "posthog-client",
    "posthog-error",
    "posthog-agent",
    "posthog-storage",
];

/// External crates that only the listed workspace crates may have as a normal dependency
/// (dev-dependencies are free: a test may poke the mock with an HTTP client).
pub const ONLY_IN: &[(&str, &[&str], &str)] = &[
    (
        "reqwest",
        &["posthog-client"],
        "only posthog-client talks HTTP to PostHog; call its API instead",
    ),
    (
        "object_store",
        &["posthog-storage"],
        "only posthog-storage talks to object stores; use its Bucket, ObjectParts, \
         ObjectStateStore or Lease (a test may use object_store's InMemory)",
    ),
    (
        "hyper",
        &["posthog-mock"],
        "only the mock serves HTTP; test against posthog-mock",
    ),
    (
        "hyper-util",
        &["posthog-mock"],
        "only the mock serves HTTP; test against posthog-mock",
    ),
];

/// Declared dependencies the code never names, each with the reason it is declared.
pub const UNUSED_ALLOWED: &[(&str, &str, &str)] = &[(
    "posthog-client",
    "flate2",
    "declared for its `zlib-rs` feature: reqwest's gzip decoder uses whichever backend flate2 \
     is built with (twice as fast on PostHog's pages, docs/benchmarks.md)",
)];

/// The longest a function outside tests may be, from its `fn` line to its closing brace.
pub const MAX_FN_LINES: usize = 100;

/// Crates whose functions are not measured, with the reason.
pub const LONG_FN_EXEMPT_CRATES: &[(&str, &str)] = &[(
    "posthog-mock",
    "a test double, never shipped: its HogQL evaluator and fixtures follow the grammar and \
     PostHog's response shapes case by case",
)];

/// Functions held to a shorter limit than [`MAX_FN_LINES`] because a newcomer reads them first:
/// `(file, function, lines, reason)`.
pub const SHORT_FN: &[(&str, &str, usize, &str)] = &[(
    "crates/posthog-osiris/src/engine/run.rs",
    "run",
    60,
    "one run, top-down: the plan decides, the steps are functions of their own",
)];

/// Functions allowed to be long because they are declarative tables, not logic:
/// `(file, function, reason)`.
pub const LONG_FN_ALLOWED: &[(&str, &str, &str)] = &[
    (
        "crates/posthog-agent/src/catalog.rs",
        "documented",
        "a table: the core fields PostHog documents for each of the eight entities, \
         (name, type, description) literals matched on the entity",
    ),
    (
        "crates/posthog-cli/src/mcp.rs",
        "tools",
        "a table: the five MCP tools, each a name, a description for the model, an input \
         schema and annotations",
    ),
];

/// Which rule a problem breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    CrateGraph,
    EnvAndFiles,
    DependencyOwners,
    ModuleDocs,
    UnusedDependencies,
    FunctionLength,
}

impl Check {
    fn title(self) -> &'static str {
        match self {
            Check::CrateGraph => "crate graph (cargo metadata vs docs/ARCHITECTURE.md)",
            Check::EnvAndFiles => {
                "libraries read no environment and use no `unsafe`; some touch no files"
            }
            Check::DependencyOwners => "who may depend on what",
            Check::ModuleDocs => "every module opens with a `//!` doc",
            Check::UnusedDependencies => "no unused dependency",
            Check::FunctionLength => "short functions (MAX_FN_LINES)",
        }
    }
}

/// One broken rule: where, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub check: Check,
    pub message: String,
}

/// `cargo xtask tidy`.
pub fn run() -> anyhow::Result<()> {
    let problems = check(&crate::workspace_root())?;
    if problems.is_empty() {
        println!(
            "tidy: ok (crate graph, environment and files, dependency owners, module docs, \
             unused dependencies, function length)"
        );
        return Ok(());
    }
    eprint!("{}", render(&problems));
    // The report says it all: no error chain or backtrace after it.
    std::process::exit(1)
}

/// Every check over the workspace at `root`.
pub fn check(root: &Path) -> anyhow::Result<Vec<Problem>> {
    let packages = graph::workspace(root)?;
    let doc_path = root.join(ARCHITECTURE);
    let doc = std::fs::read_to_string(&doc_path)
        .with_context(|| format!("reading {}", doc_path.display()))?;
    let crates = packages
        .into_iter()
        .map(|p| Crate::load(root, p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut problems = Vec::new();
    crate_graph(root, &crates, &doc, &mut problems);
    for krate in &crates {
        env_and_files(krate, &mut problems);
        dependency_owners(krate, &mut problems);
        module_docs(krate, &mut problems);
        unused_dependencies(krate, &mut problems);
    }
    function_length(&crates, &mut problems);
    problems.sort();
    Ok(problems)
}

/// The problems grouped by check, one line each.
pub fn render(problems: &[Problem]) -> String {
    let mut by_check: BTreeMap<Check, Vec<&str>> = BTreeMap::new();
    for p in problems {
        by_check.entry(p.check).or_default().push(&p.message);
    }
    let mut out = format!("tidy: {} problem(s)\n", problems.len());
    for (check, messages) in by_check {
        let _ = writeln!(out, "\n{}:", check.title());
        for m in messages {
            let _ = writeln!(out, "  {m}");
        }
    }
    out
}

/// A workspace member, its `src/**/*.rs` and its `build.rs`.
struct Crate {
    package: Package,
    /// The manifest, relative to the workspace root (`crates/posthog-cli/Cargo.toml`).
    manifest: String,
    files: Vec<SourceFile>,
}

struct SourceFile {
    /// Relative to the workspace root, with `/`.
    rel: String,
    text: String,
    source: Source,
    /// A module compiled only for tests (`#[cfg(test)] mod name;`).
    test_only: bool,
    /// Part of the library target (not `src/main.rs`, `src/bin/` nor `build.rs`).
    in_lib: bool,
}

impl Crate {
    fn load(root: &Path, package: Package) -> anyhow::Result<Crate> {
        let src = package.dir.join("src");
        let mut paths = Vec::new();
        collect_rs(&src, &mut paths)?;
        paths.sort();
        // A build script is the crate's code too (its build-dependencies are used there).
        let build_script = package.dir.join("build.rs");
        if build_script.is_file() {
            paths.push(build_script);
        }
        let mut files = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let in_lib = package.has_lib
                && path.strip_prefix(&src).is_ok_and(|in_src| {
                    in_src != Path::new("main.rs") && !in_src.starts_with("bin")
                });
            files.push(SourceFile {
                rel: relative(root, &path),
                source: Source::new(&text),
                text,
                test_only: false,
                in_lib,
            });
        }
        mark_test_modules(&mut files);
        Ok(Crate {
            manifest: relative(root, &package.dir.join("Cargo.toml")),
            package,
            files,
        })
    }

    fn shipped_files(&self) -> impl Iterator<Item = &SourceFile> {
        self.files.iter().filter(|f| !f.test_only)
    }
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_rs(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.to_string_lossy().replace('\\', "/")
}

/// Marks the files of modules declared `#[cfg(test)] mod name;`, and everything below them.
fn mark_test_modules(files: &mut [SourceFile]) {
    let mut prefixes = Vec::new();
    for f in files.iter() {
        let (dir, stem) = f.rel.rsplit_once('/').unwrap_or(("", &f.rel));
        let module_dir = match stem {
            "lib.rs" | "main.rs" | "mod.rs" => dir.to_owned(),
            _ => format!("{dir}/{}", stem.trim_end_matches(".rs")),
        };
        for name in &f.source.test_modules {
            prefixes.push(format!("{module_dir}/{name}"));
        }
    }
    for f in files.iter_mut() {
        f.test_only = prefixes
            .iter()
            .any(|p| f.rel == format!("{p}.rs") || f.rel.starts_with(&format!("{p}/")));
    }
}

/// Check 1: the arrows in `cargo metadata` are the ones drawn, and each crate has a section.
fn crate_graph(root: &Path, crates: &[Crate], doc: &str, problems: &mut Vec<Problem>) {
    let mut report = |message: String| {
        problems.push(Problem {
            check: Check::CrateGraph,
            message,
        })
    };
    let packages: Vec<Package> = crates.iter().map(|c| c.package.clone()).collect();
    let declared = graph::declared_edges(&packages);
    let drawn = match graph::drawn_edges(doc) {
        Ok(drawn) => drawn,
        Err(why) => {
            report(format!(
                "{ARCHITECTURE}: {why}; draw the crate graph there, one `a → b` (or `a ⇢ b` \
                 for a dev-dependency) a line, in a fenced block under \"## {GRAPH_HEADING}\""
            ));
            return;
        }
    };
    let manifest_of = |name: &str| {
        crates
            .iter()
            .find(|c| c.package.name == name)
            .map_or_else(|| name.to_owned(), |c| c.manifest.clone())
    };
    for edge in declared.difference(&drawn) {
        report(format!(
            "{}: `{edge}` ({}) is not drawn in {ARCHITECTURE} (\"{GRAPH_HEADING}\"): add the \
             line there and say in {}'s section why it needs {}, or remove the dependency",
            manifest_of(&edge.from),
            kind_words(edge),
            edge.from,
            edge.to
        ));
    }
    for edge in drawn.difference(&declared) {
        let fix = if declared.contains(&Edge {
            dev: !edge.dev,
            ..edge.clone()
        }) {
            "the dependency is of the other kind: fix the arrow (`→` normal, `⇢` dev-only)"
        } else {
            "no such dependency: remove the line"
        };
        report(format!(
            "{ARCHITECTURE} (\"{GRAPH_HEADING}\") draws `{edge}`, but {} declares no such {}: {fix}",
            manifest_of(&edge.from),
            kind_words(edge)
        ));
    }
    for c in crates {
        let dir = relative(root, &c.package.dir);
        let heading = format!("### `{dir}`");
        if !doc.lines().any(|l| l.trim_end() == heading) {
            report(format!(
                "{ARCHITECTURE}: no code-map section for {} (a heading `{heading}`): say what it \
                 owns and what it deliberately does not do",
                c.package.name
            ));
        }
    }
}

fn kind_words(edge: &Edge) -> &'static str {
    if edge.dev {
        "dev-dependency"
    } else {
        "normal dependency"
    }
}

/// Check 2: no library reads the environment or uses `unsafe`; the libraries in [`NO_FILES`]
/// touch no files.
fn env_and_files(krate: &Crate, problems: &mut Vec<Problem>) {
    let name = &krate.package.name;
    let env = format!(
        "{name} is a library and reads the environment (`std::env`): take the value as a \
         parameter; only binaries (posthog-cli, the mock's, xtask) read the environment"
    );
    let fs = format!(
        "{name} promises to touch no files ({ARCHITECTURE}) but uses `fs`: take bytes or a \
         reader from the caller"
    );
    let no_files = NO_FILES.contains(&name.as_str());
    for f in krate.shipped_files().filter(|f| f.in_lib) {
        let mut found: Vec<(usize, &str)> = Vec::new();
        found.extend(
            f.source
                .path_uses("env")
                .into_iter()
                .map(|at| (at, env.as_str())),
        );
        if no_files {
            found.extend(
                f.source
                    .path_uses("fs")
                    .into_iter()
                    .map(|at| (at, fs.as_str())),
            );
        }
        found.extend(source::word_offsets(&f.source.code, "unsafe").map(|at| {
            (
                at,
                "a library uses `unsafe`: only binaries may, each block with a SAFETY \
                     comment",
            )
        }));
        for (at, what) in found {
            if !f.source.in_test(at) {
                problems.push(Problem {
                    check: Check::EnvAndFiles,
                    message: format!("{}:{}: {what}", f.rel, f.source.line_of(at)),
                });
            }
        }
    }
}

/// Check 3: [`ONLY_IN`], and `anyhow` only in binaries.
fn dependency_owners(krate: &Crate, problems: &mut Vec<Problem>) {
    let name = krate.package.name.as_str();
    for dep in krate.package.deps.iter().filter(|d| d.kind != DepKind::Dev) {
        if let Some((_, owners, why)) = ONLY_IN.iter().find(|(d, ..)| *d == dep.name)
            && !owners.contains(&name)
        {
            problems.push(Problem {
                check: Check::DependencyOwners,
                message: format!(
                    "{}: {name} depends on {} ({why}); a dev-dependency is fine for tests",
                    krate.manifest, dep.name
                ),
            });
        }
        if dep.name == "anyhow" && krate.package.has_lib && !dep.optional {
            problems.push(Problem {
                check: Check::DependencyOwners,
                message: format!(
                    "{}: {name} is a library and depends on anyhow: libraries return their own \
                     error types; make it optional for the crate's binary only",
                    krate.manifest
                ),
            });
        }
    }
}

/// Check 4: every source file opens with a `//!` doc.
fn module_docs(krate: &Crate, problems: &mut Vec<Problem>) {
    for f in &krate.files {
        let first = f.text.lines().map(str::trim).find(|l| !l.is_empty());
        if !first.is_some_and(|l| l.starts_with("//!")) {
            problems.push(Problem {
                check: Check::ModuleDocs,
                message: format!(
                    "{}: does not open with a `//!` doc: say in a line or two what the module \
                     is for",
                    f.rel
                ),
            });
        }
    }
}

/// Check 5: every normal or build dependency is named by the crate's code outside tests.
fn unused_dependencies(krate: &Crate, problems: &mut Vec<Problem>) {
    let name = krate.package.name.as_str();
    let mut report = |message: String| {
        problems.push(Problem {
            check: Check::UnusedDependencies,
            message: format!("{}: {message}", krate.manifest),
        })
    };
    let mut seen = BTreeSet::new();
    for dep in krate.package.deps.iter().filter(|d| d.kind != DepKind::Dev) {
        if !seen.insert(dep.ident.as_str()) {
            continue; // declared for several targets
        }
        let allowed = UNUSED_ALLOWED
            .iter()
            .find(|(c, d, _)| *c == name && *d == dep.name);
        match (uses(krate, &dep.ident), allowed) {
            (Use::Shipped, Some(_)) => report(format!(
                "{} is used by the code now: remove its entry from UNUSED_ALLOWED in \
                 xtask/src/tidy.rs",
                dep.name
            )),
            (Use::Shipped, None) | (_, Some(_)) => {}
            (Use::TestsOnly, None) => report(format!(
                "{} is used only by tests: move it to [dev-dependencies]",
                dep.name
            )),
            (Use::None, None) => report(format!(
                "{} is declared but never used (no `{}::` nor `use {}`): remove it, or if it \
                 is there for its features, add it with the reason to UNUSED_ALLOWED in \
                 xtask/src/tidy.rs",
                dep.name, dep.ident, dep.ident
            )),
        }
    }
    for (c, d, _) in UNUSED_ALLOWED.iter().filter(|(c, ..)| *c == name) {
        if !krate.package.deps.iter().any(|dep| dep.name == *d) {
            report(format!(
                "{c} no longer declares {d}: remove its entry from UNUSED_ALLOWED in \
                 xtask/src/tidy.rs"
            ));
        }
    }
}

enum Use {
    Shipped,
    TestsOnly,
    None,
}

/// Where the crate's code names `ident` as a path (`ident::…`, `use ident`, `extern crate`).
fn uses(krate: &Crate, ident: &str) -> Use {
    let mut in_tests = false;
    for f in &krate.files {
        let text = &f.source.with_strings;
        for at in source::word_offsets(text, ident) {
            if !names_crate(text, at, ident) {
                continue;
            }
            if f.test_only || f.source.in_test(at) {
                in_tests = true;
            } else {
                return Use::Shipped;
            }
        }
    }
    if in_tests { Use::TestsOnly } else { Use::None }
}

/// Whether the word `ident` at `at` names a crate: `ident::…` not after another `::` (a
/// module of the same name), or right after `use` or `extern crate`.
fn names_crate(text: &str, at: usize, ident: &str) -> bool {
    let after = text[at + ident.len()..].trim_start();
    let before = text[..at].trim_end();
    let ends_with_word = |word: &str| {
        before.ends_with(word)
            && !before[..before.len() - word.len()]
                .ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
    };
    let after_path = before
        .strip_suffix("::")
        .is_some_and(|b| b.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_'));
    (after.starts_with("::") && !after_path) || ends_with_word("use") || ends_with_word("crate")
}

/// Check 6: no function outside tests is longer than [`MAX_FN_LINES`].
fn function_length(crates: &[Crate], problems: &mut Vec<Problem>) {
    let mut allowed_seen = BTreeSet::new();
    for krate in crates {
        let name = krate.package.name.as_str();
        if LONG_FN_EXEMPT_CRATES.iter().any(|(c, _)| *c == name) {
            continue;
        }
        for f in krate.shipped_files() {
            for func in f.source.functions() {
                let short = SHORT_FN
                    .iter()
                    .find(|(file, fun, ..)| *file == f.rel && *fun == func.name);
                if let Some((_, _, limit, why)) = short
                    && !func.test
                    && func.lines > *limit
                {
                    problems.push(Problem {
                        check: Check::FunctionLength,
                        message: format!(
                            "{}:{}: fn {} is {} lines (at most {limit}: {why})",
                            f.rel, func.line, func.name, func.lines
                        ),
                    });
                }
                if func.test || func.lines <= MAX_FN_LINES {
                    continue;
                }
                let allowed = LONG_FN_ALLOWED
                    .iter()
                    .any(|(file, fun, _)| *file == f.rel && *fun == func.name);
                if allowed {
                    allowed_seen.insert((f.rel.clone(), func.name.clone()));
                    continue;
                }
                problems.push(Problem {
                    check: Check::FunctionLength,
                    message: format!(
                        "{}:{}: fn {} is {} lines (at most {MAX_FN_LINES}): split it into steps \
                         that read top-down; a declarative table may instead be listed, with \
                         its reason, in LONG_FN_ALLOWED in xtask/src/tidy.rs",
                        f.rel, func.line, func.name, func.lines
                    ),
                });
            }
        }
    }
    for (file, fun, _) in LONG_FN_ALLOWED {
        if !allowed_seen.contains(&((*file).to_owned(), (*fun).to_owned())) {
            problems.push(Problem {
                check: Check::FunctionLength,
                message: format!(
                    "{file}: fn {fun} is in LONG_FN_ALLOWED (xtask/src/tidy.rs) but is gone or \
                     no longer over {MAX_FN_LINES} lines: remove the entry"
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gate: `cargo test --workspace` fails when any claim of ARCHITECTURE.md or the
    /// style guide checked above stops holding.
    #[test]
    fn tidy() {
        let problems = check(&crate::workspace_root()).expect("tidy could not read the workspace");
        assert!(problems.is_empty(), "\n{}", render(&problems));
    }

    #[test]
    fn the_allow_lists_give_reasons() {
        let reasons = UNUSED_ALLOWED
            .iter()
            .map(|(.., r)| r)
            .chain(LONG_FN_ALLOWED.iter().map(|(.., r)| r))
            .chain(LONG_FN_EXEMPT_CRATES.iter().map(|(_, r)| r))
            .chain(ONLY_IN.iter().map(|(.., r)| r));
        for reason in reasons {
            assert!(reason.len() > 20, "a reason, not a label: {reason}");
        }
    }

    #[test]
    fn test_module_files_are_found_from_their_declaration() {
        let file = |rel: &str, text: &str| SourceFile {
            rel: rel.into(),
            source: Source::new(text),
            text: text.into(),
            test_only: false,
            in_lib: true,
        };
        let mut files = vec![
            file(
                "c/src/lib.rs",
                "//! x\n#[cfg(test)]\nmod support;\nmod q;\n",
            ),
            file("c/src/q.rs", "//! q\n#[cfg(test)]\nmod tests;\n"),
            file("c/src/q/tests.rs", "//! t\n"),
            file("c/src/support.rs", "//! s\n"),
            file("c/src/supported.rs", "//! s\n"),
        ];
        mark_test_modules(&mut files);
        let test_only: Vec<_> = files
            .iter()
            .filter(|f| f.test_only)
            .map(|f| f.rel.as_str())
            .collect();
        assert_eq!(test_only, ["c/src/q/tests.rs", "c/src/support.rs"]);
    }
}
