//! ERC-1271 and owner signatures of `AgentAccount` on anvil (EntryPoint v0.7, Alto).
//!
//! - The TA's ERC-7739 signature for an account (`SignForAccount`: `/Sign` and `/SignHash` with
//!   `Account`) is what the deployed account's `isValidSignature(hash, signature)` accepts
//!   (`0x1626ba7e`); the same signature checked on a second account of the same owner (another
//!   salt), a signature for another chain id, the owner's plain EIP-191 `/Sign` signature and the
//!   owner's raw `/SignHash` signature of the hash are all refused (`0xffffffff`).
//! - A personal-message signature of an owner userOpHash (`/Sign` Message = the 32-byte hash, or
//!   the TA's `SignMessage`) put in a UserOperation is refused: the account returns
//!   SIG_VALIDATION_FAILED, so the EntryPoint says `AA24 signature error` and the bundler refuses
//!   it; the owner's raw `SignHash` signature of the same userOpHash (the companion's `/SignHash`,
//!   or `Tee::sign_owner_user_op` through the harness) is accepted.

use alloy::network::EthereumWallet;
use alloy::primitives::{
    address, b256, eip191_hash_message, keccak256, Address, Bytes, FixedBytes, B256, U256,
};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use kms_chain::account::Call;
use kms_chain::client::{AccountInit, ChainError, NonceChoice, OpRequest, PreparedOp};
use kms_chain::nonce::NonceKey;
use kms_chain::signature::stub_owner_signature;
use kms_chain::userop::v0_7::UserOperation;
use kms_chain::userop::EntryPointVersion::V07;
use kms_contracts::{AgentAccount, AgentAccountFactory};
use kms_e2e::chain::ChainEnv;
use kms_e2e::companion::{Companion, Wallet};
use kms_e2e::owner::Owner;
use kms_e2e::stack::Stack;
use kms_e2e::ta::TaSim;
use kms_proto::AccountSignContent;
use kms_test_support::Soft;
use serde_json::{json, Value};

/// ERC-1271's magic value: the signature is valid.
const MAGIC: FixedBytes<4> = FixedBytes([0x16, 0x26, 0xba, 0x7e]);
/// ERC-1271's refusal.
const INVALID: FixedBytes<4> = FixedBytes([0xff; 4]);

const RECIPIENT: Address = address!("0x000000000000000000000000000000000000bEEF");

async fn stack_and_chain() -> (&'static Stack, ChainEnv) {
    let stack = tokio::task::spawn_blocking(Stack::shared).await.unwrap();
    let env = ChainEnv::connect(stack.info(), V07)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", stack.output_tail()));
    (stack, env)
}

/// `account.isValidSignature(hash, signature)` as an `eth_call`.
async fn is_valid(env: &ChainEnv, account: Address, hash: B256, signature: &[u8]) -> FixedBytes<4> {
    AgentAccount::new(account, env.client.provider())
        .isValidSignature(hash, Bytes::copy_from_slice(signature))
        .call()
        .await
        .unwrap()
}

/// An owner operation deploying the account of (`owner`, `salt`) (funded first) and sending
/// one wei to [`RECIPIENT`], with gas estimated; still carrying the stub signature.
async fn deploying_op(env: &ChainEnv, owner: Address, salt: U256) -> PreparedOp {
    let account = env.client.account_address(owner, salt).await.unwrap();
    env.set_balance(account, U256::from(10).pow(U256::from(18)))
        .await
        .unwrap();
    let prepared = env
        .client
        .prepare(OpRequest {
            sender: account,
            init: Some(AccountInit { owner, salt }),
            nonce: NonceChoice::Next(NonceKey::OWNER),
            calls: vec![Call {
                to: RECIPIENT,
                value: U256::from(1),
                data: Bytes::new(),
            }],
            stub_signature: stub_owner_signature(),
            gas: None,
        })
        .await
        .unwrap();
    assert!(prepared.deploys_account);
    prepared
}

/// The EntryPoint and the bundler both refuse `op` for its signature (AA24).
async fn refused_as_bad_signature(env: &ChainEnv, op: &UserOperation) {
    match env.entry_point_verdict(op).await {
        Err(Some(d)) => assert_eq!(
            d.entry_point_reason.as_deref(),
            Some("AA24 signature error"),
            "{d:?}"
        ),
        other => panic!("the EntryPoint did not refuse the signature: {other:?}"),
    }
    match env.client.submit(op).await {
        Err(ChainError::Bundler(e)) => assert!(
            e.aa_code() == Some("AA24") || e.rpc_code() == Some(-32507),
            "signature failure expected: {e}"
        ),
        other => panic!("the bundler did not refuse: {other:?}"),
    }
}

/// Deploys the account of (`owner`, `salt`) with `factory.createAccount` from a fresh funded key.
async fn deploy_directly(env: &ChainEnv, owner: Address, salt: U256) -> Address {
    let key = PrivateKeySigner::random();
    env.set_balance(key.address(), U256::from(10).pow(U256::from(18)))
        .await
        .unwrap();
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(key))
        .connect_http(env.info.rpc_url.parse().unwrap());
    let factory = AgentAccountFactory::new(env.client.factory(), &provider);
    let receipt = factory
        .createAccount(owner, salt)
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(receipt.status());
    let account = env.client.account_address(owner, salt).await.unwrap();
    assert!(!provider.get_code_at(account).await.unwrap().is_empty());
    account
}

/// `/Sign` or `/SignHash` (`route`) of `fields` for `wallet`, with its ceremony; the answer.
async fn sign_route(
    c: &Companion,
    user: &mut Soft,
    wallet: &Wallet,
    route: &str,
    fields: Value,
) -> Value {
    let (status, v) = c
        .client()
        .signed_op(user, &wallet.key_id, route, fields)
        .await
        .unwrap();
    assert_eq!(status, 200, "{route}: {v}");
    v
}

fn signature(v: &Value) -> Vec<u8> {
    alloy::hex::decode(v["Signature"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn companion_account_signatures_pass_is_valid_signature_of_that_account_only() {
    let (stack, env) = stack_and_chain().await;
    let chain_id = stack.info().chain_id;
    let c = Companion::start(stack.info(), V07).await.unwrap();
    let mut user = Soft::new();
    let wallet = c.register(&mut user).await.unwrap();
    let owner = wallet.address;

    // Account A (salt 0) is deployed by an owner UserOperation. First the owner's /Sign
    // personal-message signature of its userOpHash: not a UserOperation signature.
    let prepared = deploying_op(&env, owner, U256::ZERO).await;
    let a = prepared.op.sender;
    let personal = sign_route(
        &c,
        &mut user,
        &wallet,
        "Sign",
        json!({"Message": prepared.user_op_hash}),
    )
    .await;
    assert_eq!(personal["SignatureFormat"], "EIP191PersonalSign");
    refused_as_bad_signature(&env, &prepared.signed(signature(&personal))).await;
    // The owner path: /SignHash, raw ECDSA over the userOpHash.
    let raw = sign_route(
        &c,
        &mut user,
        &wallet,
        "SignHash",
        json!({"Hash": prepared.user_op_hash}),
    )
    .await;
    assert_eq!(raw["SignatureFormat"], "RawDigest");
    let receipt = env
        .submit_and_wait(&prepared.signed(signature(&raw)))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", stack.output_tail()));
    assert!(receipt.success);
    let account_a = AgentAccount::new(a, env.client.provider());
    assert_eq!(account_a.owner().call().await.unwrap(), owner);
    // Its EIP-712 domain is the one the TA wraps into.
    let domain = account_a.eip712Domain().call().await.unwrap();
    assert_eq!(domain.name, "AgentAccount");
    assert_eq!(domain.version, "1");
    assert_eq!(domain.chainId, U256::from(chain_id));
    assert_eq!(domain.verifyingContract, a);
    // ERC-7739 support detection.
    assert_eq!(
        is_valid(
            &env,
            a,
            b256!("0x7739773977397739773977397739773977397739773977397739773977397739"),
            &[]
        )
        .await,
        FixedBytes([0x77, 0x39, 0x00, 0x01])
    );

    // Account B (salt 1) of the same owner.
    let b = deploy_directly(&env, owner, U256::from(1)).await;
    assert_ne!(a, b);

    // /Sign Message + Account A: valid on A, not on B.
    let message = "I own this account (erc1271 e2e)";
    let hash = eip191_hash_message(message);
    let wrapped = sign_route(
        &c,
        &mut user,
        &wallet,
        "Sign",
        json!({"Message": message, "Account": a}),
    )
    .await;
    assert_eq!(wrapped["SignatureFormat"], "ERC7739PersonalSign");
    assert_eq!(wrapped["ChainId"], chain_id);
    assert_eq!(
        wrapped["IsValidSignatureHash"]
            .as_str()
            .unwrap()
            .parse::<B256>()
            .unwrap(),
        hash
    );
    let sig_a = signature(&wrapped);
    assert_eq!(is_valid(&env, a, hash, &sig_a).await, MAGIC);
    assert_eq!(is_valid(&env, b, hash, &sig_a).await, INVALID);
    // Not for another hash either.
    assert_eq!(
        is_valid(&env, a, eip191_hash_message("something else"), &sig_a).await,
        INVALID
    );
    // The owner's plain /Sign (EIP-191) signature of the message: refused by A.
    let plain = sign_route(&c, &mut user, &wallet, "Sign", json!({"Message": message})).await;
    assert_eq!(plain["SignatureFormat"], "EIP191PersonalSign");
    assert_eq!(is_valid(&env, a, hash, &signature(&plain)).await, INVALID);

    // /SignHash + Account B for a dapp's 32-byte hash: valid on B, not on A; the owner's raw
    // /SignHash of the same hash is refused.
    let dapp_hash = keccak256(b"a dapp's EIP-712 digest");
    let wrapped_hash = sign_route(
        &c,
        &mut user,
        &wallet,
        "SignHash",
        json!({"Hash": dapp_hash, "Account": b}),
    )
    .await;
    assert_eq!(wrapped_hash["SignatureFormat"], "ERC7739PersonalSign");
    let sig_b = signature(&wrapped_hash);
    assert_eq!(is_valid(&env, b, dapp_hash, &sig_b).await, MAGIC);
    assert_eq!(is_valid(&env, a, dapp_hash, &sig_b).await, INVALID);
    let raw_hash = sign_route(
        &c,
        &mut user,
        &wallet,
        "SignHash",
        json!({"Hash": dapp_hash}),
    )
    .await;
    assert_eq!(
        is_valid(&env, b, dapp_hash, &signature(&raw_hash)).await,
        INVALID
    );

    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn harness_owner_signatures_in_the_ta() {
    let (stack, env) = stack_and_chain().await;
    let chain_id = stack.info().chain_id;
    let sim = TaSim::start().unwrap();
    let owner = Owner::create(&sim.client()).await.unwrap();

    // A personal-message signature (TA SignMessage) of the userOpHash: AA24.
    let prepared = deploying_op(&env, owner.address, U256::from(7)).await;
    let account = prepared.op.sender;
    let personal = owner
        .sign_personal_message(prepared.user_op_hash.as_slice())
        .await
        .unwrap();
    refused_as_bad_signature(&env, &prepared.signed(personal)).await;
    // sign_owner_user_op (TA SignHash, raw): accepted.
    let raw = owner.sign_user_op(prepared.user_op_hash).await.unwrap();
    env.submit_and_wait(&prepared.signed(raw))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", stack.output_tail()));
    assert!(!env
        .client
        .provider()
        .get_code_at(account)
        .await
        .unwrap()
        .is_empty());

    // SignForAccount: valid for this account and chain; the same content for another chain id
    // or another account is refused here.
    let message = b"harness message";
    let hash = eip191_hash_message(message);
    let content = AccountSignContent::Message(message.to_vec());
    let good = owner
        .sign_for_account(chain_id, account, content.clone())
        .await
        .unwrap();
    assert_eq!(is_valid(&env, account, hash, &good).await, MAGIC);
    let other_chain = owner
        .sign_for_account(chain_id + 1, account, content.clone())
        .await
        .unwrap();
    assert_ne!(other_chain, good);
    assert_eq!(is_valid(&env, account, hash, &other_chain).await, INVALID);
    let other_account = owner
        .sign_for_account(chain_id, RECIPIENT, content)
        .await
        .unwrap();
    assert_eq!(is_valid(&env, account, hash, &other_account).await, INVALID);
    // The hash form gives the same signature as the message form (same wrapped digest).
    let by_hash = owner
        .sign_for_account(chain_id, account, AccountSignContent::Hash(hash.0))
        .await
        .unwrap();
    assert_eq!(by_hash, good);
    // The EIP-191 signature of the message is refused.
    let eip191 = owner.sign_personal_message(message).await.unwrap();
    assert_eq!(is_valid(&env, account, hash, &eip191).await, INVALID);
}
