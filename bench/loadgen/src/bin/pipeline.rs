//! `pipeline`: the intent pipeline on anvil + Alto, measured at the
//! kms-chain level (the `/agent/intents` route is not on main yet).
//!
//! Starts the local chain stack (`anvil/stack.sh`: anvil, EntryPoint v0.7,
//! the project's contracts, Alto) and a release `ta-sim`; creates a wallet
//! and an agent key in the TA (passkey-authorised); deploys an account whose
//! owner grants the agent a session on SessionKeyValidator; then runs N
//! intents one after another, each a native transfer to the allowed target:
//!
//! * RPC preparation: `EntryPoint.getNonce` (the agent's nonce key), the
//!   bundler's gas price, `eth_estimateUserOperationGas` with a stub
//!   106-byte signature;
//! * the companion's own work: build the operation, compute the userOpHash
//!   locally, have the TA sign it (`SignAgentUserOp` over the ta-sim socket);
//! * `eth_sendUserOperation`, then `eth_getUserOperationReceipt` polled
//!   every 25 ms until included.
//!
//! Prints each phase's p50/p90/max and its share of the total.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use alloy::network::TransactionBuilder;
use alloy::primitives::aliases::{U192, U48};
use alloy::primitives::{address, b256, utils::parse_ether, Address, Bytes, B256, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use alloy::sol_types::SolCall;
use clap::Parser;
use hdrhistogram::Histogram;
use kms_chain::bundler::BundlerClient;
use kms_chain::signature::{stub_owner_signature, stub_session_signature};
use kms_chain::userop::v0_7::{GasLimits, UserOperation};
use kms_contracts::{AgentAccount, AgentAccountFactory, IEntryPointV07, SessionKeyValidator};
use kms_e2e::stack::Stack;
use kms_loadgen::procs::{self, Profile};
use kms_proto::authz::{self, AuthorizedBody};
use kms_proto::*;
use kms_tee_client::{SimTransport, TeeClient};
use p256::ecdsa::signature::Signer;
use sha2::{Digest, Sha256};

/// A fixed owner key for the account (not one of anvil's dev keys).
const OWNER_KEY: B256 = b256!("0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6");
const RECIPIENT: Address = address!("0x000000000000000000000000000000000000bEEF");

#[derive(Parser, Debug)]
#[command(name = "pipeline", about = "Intent pipeline figures on anvil + Alto")]
struct Cli {
    /// Intents to run (one after another).
    #[arg(long, default_value_t = 100)]
    intents: usize,
    /// Directory with `ta-sim` (skips `cargo build`).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// A P-256 software passkey making WebAuthn assertions the TA accepts.
struct Passkey {
    key: p256::ecdsa::SigningKey,
    counter: u32,
}

impl Passkey {
    fn new() -> Self {
        let mut b = [7u8; 32];
        b[0] = 1;
        Passkey {
            key: p256::ecdsa::SigningKey::from_slice(&b).expect("p256 key"),
            counter: 0,
        }
    }
    fn public_key(&self) -> Vec<u8> {
        self.key
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }
    fn assert(&mut self, challenge: &[u8; 32]) -> PasskeyAssertion {
        use base64::Engine;
        self.counter += 1;
        let mut ad = Sha256::digest(b"localhost").to_vec();
        ad.push(0x05);
        ad.extend_from_slice(&self.counter.to_be_bytes());
        let cdj = format!(
            r#"{{"type":"webauthn.get","challenge":"{}","origin":"http://localhost:3000","crossOrigin":false}}"#,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(challenge)
        )
        .into_bytes();
        let mut signed = ad.clone();
        signed.extend_from_slice(&Sha256::digest(&cdj));
        let sig: p256::ecdsa::Signature = self.key.sign(&signed);
        PasskeyAssertion {
            authenticator_data: ad,
            client_data_json: cdj,
            signature: sig.to_der().as_bytes().to_vec(),
        }
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram")
}

fn line(name: &str, h: &Histogram<u64>, total_us: f64) {
    let ms = |v: u64| v as f64 / 1000.0;
    let sum = h.mean() * h.len() as f64;
    println!(
        "  {name:<34} p50 {:>8.2} ms  p90 {:>8.2} ms  max {:>8.2} ms  mean {:>8.2} ms  share {:>5.1}%",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.max()),
        h.mean() / 1000.0,
        100.0 * sum / total_us
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let bins = match &cli.bin_dir {
        Some(d) => d.clone(),
        None => procs::cargo_build("kms-ta-sim", &["ta-sim"], &[], Profile::Release),
    };
    eprintln!("pipeline: starting anvil + Alto (anvil/stack.sh)");
    let stack = tokio::task::spawn_blocking(Stack::start).await??;
    let info = stack.info().clone();
    let tmp = tempfile::tempdir()?;
    let _sim = procs::start_sim(&bins.join("ta-sim"), tmp.path(), &[])?;
    let tee = TeeClient::new(SimTransport::new(tmp.path().join("ta.sock")));

    // The agent key, minted in the TA under the owner's passkey.
    let mut pk = Passkey::new();
    let wallet = tee.call(&CreateWallet {
        passkey_public_key: pk.public_key(),
        rp_id: "localhost".into(),
    })?;
    let body = MintAgentBody {
        wallet_id: wallet.wallet_id,
        label: "pipeline".into(),
        ttl_secs: 3600,
    };
    let nonce = tee.call(&GetChallenge {
        wallet_id: wallet.wallet_id,
    })?;
    let assertion = pk.assert(&authz::challenge(&nonce.nonce, &body.payload_digest()));
    let cred = tee.call(&CreateAgentKey {
        agent_index: 0,
        body,
        assertion,
    })?;
    let jwt = cred.to_jwt();
    let agent = Address::from(cred.address);

    // The account: deployed by the owner's first operation, which also
    // grants the agent a session (target RECIPIENT, a spend cap).
    let deployer = PrivateKeySigner::from_bytes(&info.deployer_private_key)?;
    let provider = ProviderBuilder::new()
        .wallet(deployer)
        .connect_http(info.rpc_url.parse()?);
    let bundler = BundlerClient::new(info.bundler_url.as_str())?;
    let ep = info.entry_point_v07;
    let owner = PrivateKeySigner::from_bytes(&OWNER_KEY)?;
    let salt = U256::from(7);
    let factory = AgentAccountFactory::new(info.account_factory_v07, &provider);
    let sender = factory.getAddress(owner.address(), salt).call().await?;
    provider
        .send_transaction(
            TransactionRequest::default()
                .with_to(sender)
                .with_value(parse_ether("10")?),
        )
        .await?
        .get_receipt()
        .await?;
    let grant = SessionKeyValidator::grantSessionCall {
        key: agent,
        targets: vec![RECIPIENT],
        spendCap: parse_ether("5")?.to::<u128>(),
        validAfter: U48::ZERO,
        validUntil: U48::ZERO,
        revoker: Address::ZERO,
    }
    .abi_encode();
    let call = AgentAccount::executeCall {
        target: info.session_key_validator,
        value: U256::ZERO,
        data: grant.into(),
    }
    .abi_encode();
    let fees = bundler.user_operation_gas_price().await?.fast.as_u128s()?;
    let mut op = UserOperation::new(sender, U256::ZERO, call)
        .with_factory(
            info.account_factory_v07,
            AgentAccountFactory::createAccountCall {
                owner: owner.address(),
                salt,
            }
            .abi_encode(),
        )
        .with_fees(fees.0, fees.1)
        .with_signature(stub_owner_signature());
    let est = bundler.estimate_user_operation_gas(&op, ep).await?;
    op = op.with_gas(GasLimits::try_from(&est)?);
    let hash = op.hash(ep, info.chain_id);
    op = op.with_signature(
        owner
            .sign_message_sync(hash.as_slice())?
            .as_bytes()
            .to_vec(),
    );
    bundler.send_user_operation(&op, ep).await?;
    let r = bundler
        .wait_for_receipt(hash, Duration::from_secs(60), Duration::from_millis(50))
        .await?;
    assert!(r.success, "owner operation failed: {r:?}");
    eprintln!("pipeline: account {sender} deployed, session granted to agent {agent}");

    let (mut h_rpc, mut h_own, mut h_sign, mut h_submit, mut h_wait, mut h_total) =
        (hist(), hist(), hist(), hist(), hist(), hist());
    let nonce_key = U192::from(1);
    let entry = IEntryPointV07::new(ep, &provider);
    let value = U256::from(1_000_000_000u64);
    let before = provider.get_balance(RECIPIENT).await?;
    let load0 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    for i in 0..cli.intents {
        let t0 = Instant::now();
        // RPC preparation.
        let nonce = entry.getNonce(sender, nonce_key).call().await?;
        let fees = bundler.user_operation_gas_price().await?.fast.as_u128s()?;
        let call = AgentAccount::executeCall {
            target: RECIPIENT,
            value,
            data: Bytes::new(),
        }
        .abi_encode();
        let stub = UserOperation::new(sender, nonce, call.clone())
            .with_fees(fees.0, fees.1)
            .with_signature(stub_session_signature(sender, agent));
        let est = bundler.estimate_user_operation_gas(&stub, ep).await?;
        let t1 = Instant::now();
        // The companion's own work: build, hash, TA signature.
        let op = UserOperation::new(sender, nonce, call)
            .with_fees(fees.0, fees.1)
            .with_gas(GasLimits::try_from(&est)?);
        let hash = op.hash(ep, info.chain_id);
        let ts = Instant::now();
        let sig = tee
            .call_async(&SignAgentUserOp {
                wallet_id: wallet.wallet_id,
                agent_index: 0,
                jwt: jwt.clone(),
                user_op_hash: hash.0,
                account: sender.into_array(),
            })
            .await?;
        let op = op.with_signature(sig.signature);
        let t2 = Instant::now();
        let submitted = bundler.send_user_operation(&op, ep).await?;
        assert_eq!(submitted, hash, "bundler's userOpHash");
        let t3 = Instant::now();
        let r = bundler
            .wait_for_receipt(hash, Duration::from_secs(60), Duration::from_millis(25))
            .await?;
        let t4 = Instant::now();
        assert!(r.success, "intent {i} failed: {r:?}");
        let us = |d: Duration| (d.as_micros() as u64).max(1);
        h_rpc.record(us(t1 - t0))?;
        h_own.record(us(t2 - t1))?;
        h_sign.record(us(t2 - ts))?;
        h_submit.record(us(t3 - t2))?;
        h_wait.record(us(t4 - t3))?;
        h_total.record(us(t4 - t0))?;
    }
    let moved = provider.get_balance(RECIPIENT).await? - before;
    assert_eq!(
        moved,
        value * U256::from(cli.intents),
        "every intent moved its value"
    );
    let total_us = h_total.mean() * h_total.len() as f64;
    println!(
        "pipeline: {} intents on anvil + Alto (EntryPoint v0.7), one after another, all included (recipient +{} wei)",
        cli.intents, moved
    );
    line("RPC prep (nonce, fees, estimate)", &h_rpc, total_us);
    line("companion own (build+hash+sign)", &h_own, total_us);
    line("  of which TA SignAgentUserOp", &h_sign, total_us);
    line("eth_sendUserOperation", &h_submit, total_us);
    line("submit -> receipt (25 ms polls)", &h_wait, total_us);
    line("total to receipt", &h_total, total_us);
    println!(
        "  ratio companion-own / total-to-receipt = {:.4} (mean {:.3} ms of {:.1} ms)",
        h_own.mean() / h_total.mean(),
        h_own.mean() / 1000.0,
        h_total.mean() / 1000.0
    );
    println!(
        "  load average before {} after {}",
        load0.trim(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    drop(stack);
    Ok(())
}
