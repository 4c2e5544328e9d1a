//! `build-contracts`: compiles the project's Solidity (the top of `contracts/`) with the pinned
//! solc 0.8.37 (`anvil/bin/solc`, solc.js under Node.js) through `foundry-compilers`, with the
//! settings of `contracts/foundry.toml`, and refreshes the committed artifacts the Rust crate
//! `kms-contracts` embeds:
//!
//! - `contracts/artifacts/<Contract>.json`: `{contractName, abi, bytecode, deployedBytecode}`;
//! - `contracts/artifacts/sources.sha256`: the SHA-256 of every product source at build time,
//!   written last (`contracts/build.rs` refuses to build when a source no longer matches).
//!
//! Nothing is downloaded: `foundry-compilers` is built without its solc installer (svm), and the
//! compiler is the repo's shim. `anvil/build-contracts.sh` installs `anvil/node_modules` and runs
//! this binary.

// The freshness check of build.rs: the builder lists the sources with it and checks its own output
// with it (not every helper is used here).
#[allow(dead_code)]
#[path = "../../build_support/manifest.rs"]
mod manifest;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use foundry_compilers::artifacts::{
    BytecodeHash, EvmVersion, Optimizer, Remapping, Settings, SettingsMetadata, Source, Sources,
};
use foundry_compilers::compilers::solc::{Solc, SolcCompiler, SolcLanguage, SolcSettings};
use foundry_compilers::project::ProjectCompiler;
use foundry_compilers::{ConfigurableArtifacts, ProjectBuilder, ProjectPathsConfig};
use serde::Serialize;

/// The contracts whose artifacts are committed: (contract name, source relative to `contracts/`).
const CONTRACTS: &[(&str, &str)] = &[
    ("SessionKeyValidator", "SessionKeyValidator.sol"),
    ("AgentAccount", "AgentAccount.sol"),
    ("AgentAccountFactory", "AgentAccountFactory.sol"),
    ("TestToken", "testing/TestToken.sol"),
    ("OzAccount7579", "testing/OzAccount7579.sol"),
    ("Eip7702Account", "Eip7702Account.sol"),
];

/// The solc version the project pins (`anvil/package.json`'s solc.js, `contracts/foundry.toml`).
const SOLC_VERSION: (u64, u64, u64) = (0, 8, 37);

// The settings of `contracts/foundry.toml` that change the bytecode (a unit test reads them back
// from foundry.toml, so the two cannot drift apart).
const OPTIMIZER_RUNS: usize = 200;
const EVM_VERSION: EvmVersion = EvmVersion::Cancun;
const REMAPPINGS: &[&str] = &[
    "@openzeppelin/contracts/=node_modules/@openzeppelin/contracts/",
    "@account-abstraction/contracts/=node_modules/@account-abstraction/contracts/",
    "account-abstraction/=node_modules/@account-abstraction/contracts/",
    "forge-std/=node_modules/@layerzerolabs/toolbox-foundry/lib/forge-std/",
];
/// foundry.toml's `ignored_error_codes` (license, code-size, init-code-size, transient-storage,
/// 4591): warnings not worth printing.
const IGNORED_ERROR_CODES: &[u64] = &[1878, 5574, 3860, 2394, 4591];

const HELP: &str = "\
build-contracts: compiles the Solidity of contracts/ (SessionKeyValidator.sol, AgentAccount.sol,
AgentAccountFactory.sol, interfaces/, testing/) with the pinned solc 0.8.37 and the settings of
contracts/foundry.toml, and refreshes the committed artifacts of the Rust crate kms-contracts:
  contracts/artifacts/<Contract>.json   {contractName, abi, bytecode, deployedBytecode}
  contracts/artifacts/sources.sha256    SHA-256 of every product .sol, written last
contracts/build.rs refuses to build when a source no longer matches its recorded hash.

usage: build-contracts [--solc PATH] [--contracts-dir DIR]
  --solc PATH          the solc 0.8.37 to use (default: anvil/bin/solc, the solc.js shim, which
                       needs anvil/node_modules: anvil/build-contracts.sh installs it)
  --contracts-dir DIR  the contracts/ folder (default: the one this binary was built from)
Nothing is downloaded. Usually run through anvil/build-contracts.sh.";

fn log(msg: impl AsRef<str>) {
    eprintln!("[build-contracts] {}", msg.as_ref());
}

struct Options {
    contracts_dir: PathBuf,
    solc: PathBuf,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, String> {
    let contracts_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("contracts/builder has a parent")
        .to_path_buf();
    let mut opts = Options {
        solc: contracts_dir
            .parent()
            .expect("contracts/ has a parent")
            .join("anvil/bin/solc"),
        contracts_dir,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--solc" => {
                opts.solc = args.next().ok_or("--solc needs a path")?.into();
            }
            "--contracts-dir" => {
                opts.contracts_dir = args.next().ok_or("--contracts-dir needs a path")?.into();
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    Ok(Some(opts))
}

/// The solc to compile with, after checking that it is there and is 0.8.37.
fn find_solc(path: &Path) -> Result<Solc, String> {
    const GET: &str = "install the pinned toolchain with anvil/build-contracts.sh (or \
                       `cd anvil && npm ci --ignore-scripts`; Node.js >= 20 is needed)";
    if !path.is_file() {
        return Err(format!("solc not found at {}; {GET}", path.display()));
    }
    // The shim answers --version by itself: check what it runs as well.
    if path.ends_with("anvil/bin/solc") {
        let solcjs = path.parent().unwrap().join("../node_modules/solc/solc.js");
        if !solcjs.is_file() {
            return Err(format!(
                "{} is missing (the solc.js that {} runs); {GET}",
                solcjs.display(),
                path.display()
            ));
        }
    }
    let solc = Solc::new(path)
        .map_err(|e| format!("cannot run {} --version: {e}; {GET}", path.display()))?;
    let v = &solc.version;
    if (v.major, v.minor, v.patch) != SOLC_VERSION {
        let (a, b, c) = SOLC_VERSION;
        return Err(format!(
            "{} is solc {v}, the project pins {a}.{b}.{c}; {GET}",
            path.display()
        ));
    }
    Ok(solc)
}

/// The compiler settings of `contracts/foundry.toml` that the bytecode depends on.
fn settings() -> SolcSettings {
    let settings = Settings {
        optimizer: Optimizer {
            enabled: Some(true),
            runs: Some(OPTIMIZER_RUNS),
            details: None,
        },
        metadata: Some(SettingsMetadata {
            use_literal_content: None,
            bytecode_hash: Some(BytecodeHash::None),
            cbor_metadata: Some(false),
        }),
        evm_version: Some(EVM_VERSION),
        ..Settings::default()
    };
    SolcSettings {
        settings,
        cli_settings: Default::default(),
    }
}

/// One committed artifact, in the shape `contracts/src/lib.rs`'s `sol!` reads (and with the key
/// order and formatting of the files forge and jq used to write).
#[derive(Serialize)]
struct Artifact<'a, Abi: Serialize> {
    #[serde(rename = "contractName")]
    contract_name: &'a str,
    abi: &'a Abi,
    bytecode: &'a str,
    #[serde(rename = "deployedBytecode")]
    deployed_bytecode: &'a str,
}

/// The text of `artifacts/<name>.json`: two-space indented JSON and a final newline.
fn render_artifact<Abi: Serialize>(
    name: &str,
    abi: &Abi,
    bytecode: &str,
    deployed_bytecode: &str,
) -> String {
    let artifact = Artifact {
        contract_name: name,
        abi,
        bytecode,
        deployed_bytecode,
    };
    let mut text = serde_json::to_string_pretty(&artifact).expect("an artifact serializes");
    text.push('\n');
    text
}

/// The text of `artifacts/sources.sha256` for the given sources (path, content), in the format
/// `manifest::check` reads (`sha256sum`'s).
fn render_manifest(sources: &[(String, Vec<u8>)]) -> String {
    use sha2::{Digest, Sha256};
    let mut text = String::new();
    for (path, content) in sources {
        let digest = Sha256::digest(content);
        for b in digest {
            write!(text, "{b:02x}").unwrap();
        }
        writeln!(text, "  {path}").unwrap();
    }
    text
}

/// Writes `path` atomically: a temporary file next to it, then a rename.
fn write_atomic(path: &Path, text: &str) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, text).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn bytecode_hex(
    name: &str,
    what: &str,
    object: Option<&foundry_compilers::artifacts::BytecodeObject>,
) -> Result<String, String> {
    let object = object.ok_or_else(|| format!("solc produced no {what} for {name}"))?;
    if object.as_bytes().is_none() {
        return Err(format!("the {what} of {name} needs linking (a library)"));
    }
    // Serialized as forge writes it: "0x" and lower-case hex.
    match serde_json::to_value(object) {
        Ok(serde_json::Value::String(hex)) => Ok(hex),
        other => Err(format!("unexpected {what} of {name}: {other:?}")),
    }
}

fn run(opts: &Options) -> Result<(), String> {
    let start = Instant::now();
    let dir = fs::canonicalize(&opts.contracts_dir).map_err(|e| {
        format!(
            "contracts dir {}: {e}",
            opts.contracts_dir.as_path().display()
        )
    })?;
    let node_modules = dir.join("node_modules");
    if !node_modules.join("@openzeppelin/contracts").is_dir() {
        return Err(format!(
            "{} has no @openzeppelin/contracts: install the packages with anvil/build-contracts.sh \
             (or `cd anvil && npm ci --ignore-scripts`)",
            node_modules.display()
        ));
    }
    let solc = find_solc(&opts.solc)?;

    // The product sources, read once: their content is both compiled and hashed, so the manifest
    // records exactly what the artifacts were built from.
    let names = manifest::solidity_sources(&dir)
        .map_err(|e| format!("cannot list the sources of {}: {e}", dir.display()))?;
    let mut sources = Vec::new();
    for name in &names {
        let content =
            fs::read(dir.join(name)).map_err(|e| format!("cannot read contracts/{name}: {e}"))?;
        sources.push((name.clone(), content));
    }
    let mut inputs = Sources::new();
    for (name, content) in &sources {
        let text = String::from_utf8(content.clone())
            .map_err(|_| format!("contracts/{name} is not UTF-8"))?;
        inputs.insert(dir.join(name), Source::new(text));
    }

    let remappings = REMAPPINGS
        .iter()
        .map(|r| {
            r.parse::<Remapping>()
                .map_err(|e| format!("remapping {r}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Only the product sources are inputs; forge's out/ and cache/ are never touched.
    let paths = ProjectPathsConfig::builder()
        .root(&dir)
        .sources(&dir)
        .tests(dir.join("test"))
        .scripts(dir.join("script"))
        .artifacts(dir.join("out"))
        .cache(dir.join("cache/solidity-files-cache.json"))
        .lib(&node_modules)
        .remappings(remappings)
        .build::<SolcLanguage>()
        .map_err(|e| format!("project paths: {e}"))?;
    let project = ProjectBuilder::<SolcCompiler, ConfigurableArtifacts>::new(Default::default())
        .paths(paths)
        .settings(settings())
        .ignore_error_codes(IGNORED_ERROR_CODES.iter().copied())
        // Warnings are reported with paths relative to the root (foundry.toml's
        // `ignored_warnings_from`).
        .ignore_paths(vec![PathBuf::from("node_modules")])
        .ephemeral()
        .offline()
        .build(SolcCompiler::Specific(solc.clone()))
        .map_err(|e| format!("project: {e}"))?;

    log(format!(
        "compiling {} sources of contracts/ with solc {} ({})",
        sources.len(),
        solc.version,
        opts.solc.display()
    ));
    let output = ProjectCompiler::with_sources(&project, inputs)
        .and_then(|c| c.compile())
        .map_err(|e| format!("compilation failed: {e}"))?;
    if output.has_compiler_errors() {
        return Err(format!("solc reported errors:\n{output}"));
    }
    if output.has_compiler_warnings() {
        eprintln!("{output}");
    }
    log(format!(
        "compiled in {:.1} s",
        start.elapsed().as_secs_f64()
    ));

    let out_dir = dir.join("artifacts");
    fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    // The manifest goes last: an interrupted run leaves it missing, which build.rs reports.
    let manifest_path = out_dir.join(manifest::MANIFEST);
    match fs::remove_file(&manifest_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot remove {}: {e}", manifest_path.display())),
    }
    for (name, source) in CONTRACTS {
        let artifact = output
            .find(&dir.join(source), name)
            .ok_or_else(|| format!("solc produced no contract {name} in contracts/{source}"))?;
        let abi = artifact
            .abi
            .as_ref()
            .ok_or_else(|| format!("solc produced no ABI for {name}"))?;
        let bytecode = bytecode_hex(
            name,
            "bytecode",
            artifact.bytecode.as_ref().map(|b| &b.object),
        )?;
        let deployed = bytecode_hex(
            name,
            "deployed bytecode",
            artifact
                .deployed_bytecode
                .as_ref()
                .and_then(|b| b.bytecode.as_ref())
                .map(|b| &b.object),
        )?;
        let path = out_dir.join(format!("{name}.json"));
        write_atomic(&path, &render_artifact(name, abi, &bytecode, &deployed))?;
        log(format!(
            "wrote contracts/artifacts/{name}.json ({} bytes of runtime code)",
            (deployed.len() - 2) / 2
        ));
    }
    write_atomic(&manifest_path, &render_manifest(&sources))?;
    // What build.rs will check: fails if a source changed while it was being compiled.
    if let Err(problems) = manifest::check(&dir) {
        let list: Vec<_> = problems.iter().map(|p| format!("  {p}")).collect();
        return Err(format!(
            "the sources changed during the build; run it again:\n{}",
            list.join("\n")
        ));
    }
    log(format!(
        "wrote contracts/artifacts/{} ({} sources) in {:.1} s",
        manifest::MANIFEST,
        sources.len(),
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contracts_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// A committed artifact, read back with the keys `contracts/src/lib.rs`'s `sol!` uses.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Committed {
        #[serde(rename = "contractName")]
        contract_name: String,
        abi: alloy_json_abi::JsonAbi,
        bytecode: String,
        #[serde(rename = "deployedBytecode")]
        deployed_bytecode: String,
    }

    /// The builder writes the committed artifacts byte for byte: same keys, order and layout as
    /// the files the `sol!` macros of kms-contracts read (so regenerating them changes nothing
    /// when the sources did not change).
    #[test]
    fn renders_the_committed_artifacts_exactly() {
        for (name, _) in CONTRACTS {
            let path = contracts_dir().join(format!("artifacts/{name}.json"));
            let text = fs::read_to_string(&path).unwrap();
            let c: Committed = serde_json::from_str(&text).unwrap();
            assert_eq!(c.contract_name, *name);
            assert!(c.bytecode.starts_with("0x") && c.bytecode.len() > 2);
            assert!(c.deployed_bytecode.starts_with("0x") && c.deployed_bytecode.len() > 2);
            let rendered = render_artifact(name, &c.abi, &c.bytecode, &c.deployed_bytecode);
            assert!(
                rendered == text,
                "{name}.json would be rewritten differently"
            );
        }
    }

    /// The manifest the builder writes is one that `manifest::check` (build.rs) accepts, and a
    /// change after it is caught.
    #[test]
    fn manifest_is_accepted_by_the_freshness_check() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("interfaces")).unwrap();
        fs::create_dir_all(tmp.path().join("test")).unwrap();
        fs::create_dir_all(tmp.path().join("artifacts")).unwrap();
        fs::write(tmp.path().join("A.sol"), "contract A {}").unwrap();
        fs::write(tmp.path().join("interfaces/IA.sol"), "interface IA {}").unwrap();
        fs::write(tmp.path().join("test/A.t.sol"), "contract T {}").unwrap();
        let sources: Vec<_> = manifest::solidity_sources(tmp.path())
            .unwrap()
            .into_iter()
            .map(|p| {
                let content = fs::read(tmp.path().join(&p)).unwrap();
                (p, content)
            })
            .collect();
        let manifest_path = tmp.path().join("artifacts").join(manifest::MANIFEST);
        write_atomic(&manifest_path, &render_manifest(&sources)).unwrap();
        assert_eq!(manifest::check(tmp.path()).unwrap().len(), 2);

        fs::write(tmp.path().join("A.sol"), "contract A { uint x; }").unwrap();
        assert_eq!(
            manifest::check(tmp.path()).unwrap_err(),
            vec![manifest::Staleness::Changed("A.sol".into())]
        );
    }

    /// The committed manifest is what the builder would write for today's sources.
    #[test]
    fn committed_manifest_matches_the_renderer() {
        let dir = contracts_dir();
        let sources: Vec<_> = manifest::solidity_sources(&dir)
            .unwrap()
            .into_iter()
            .map(|p| {
                let content = fs::read(dir.join(&p)).unwrap();
                (p, content)
            })
            .collect();
        let committed = fs::read_to_string(dir.join("artifacts").join(manifest::MANIFEST)).unwrap();
        assert_eq!(render_manifest(&sources), committed);
    }

    /// The settings that make the bytecode are those of contracts/foundry.toml (which forge uses
    /// for the tests), so the artifacts are the bytecode the forge tests exercise.
    #[test]
    fn settings_match_foundry_toml() {
        let toml = fs::read_to_string(contracts_dir().join("foundry.toml")).unwrap();
        let has = |line: &str| toml.lines().any(|l| l.trim() == line);
        assert!(has("optimizer = true"));
        assert!(has(&format!("optimizer_runs = {OPTIMIZER_RUNS}")));
        assert!(has(&format!("evm_version = \"{}\"", EVM_VERSION.as_str())));
        assert!(has("bytecode_hash = \"none\""));
        assert!(has("cbor_metadata = false"));
        assert!(has("solc = \"../anvil/bin/solc\""));
        assert!(!toml.contains("via_ir"), "the builder does not set via_ir");
        let listed: Vec<_> = toml
            .lines()
            .skip_while(|l| !l.starts_with("remappings = ["))
            .skip(1)
            .take_while(|l| !l.starts_with(']'))
            .map(|l| l.trim().trim_end_matches(',').trim_matches('"'))
            .collect();
        assert_eq!(listed, REMAPPINGS);

        let s = settings().settings;
        assert_eq!(s.optimizer.runs, Some(OPTIMIZER_RUNS));
        let metadata = s.metadata.unwrap();
        assert_eq!(metadata.bytecode_hash, Some(BytecodeHash::None));
        assert_eq!(metadata.cbor_metadata, Some(false));
    }

    #[test]
    fn arguments() {
        let args = |a: &[&str]| parse_args(a.iter().map(|s| s.to_string()));
        assert!(args(&["--help"]).unwrap().is_none());
        let opts = args(&[]).unwrap().unwrap();
        assert!(opts.solc.ends_with("anvil/bin/solc"));
        assert!(opts.contracts_dir.join("foundry.toml").is_file());
        let opts = args(&["--solc", "/x/solc"]).unwrap().unwrap();
        assert_eq!(opts.solc, Path::new("/x/solc"));
        assert!(args(&["--solc"]).is_err());
        assert!(args(&["--frobnicate"]).is_err());
    }

    #[test]
    fn missing_solc_says_how_to_get_it() {
        let err = find_solc(Path::new("/nonexistent/anvil/bin/solc")).unwrap_err();
        assert!(err.contains("anvil/build-contracts.sh"), "{err}");
    }
}
