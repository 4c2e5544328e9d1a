//! An owner-signed UserOperation through Alto deploys the account (factory/factoryData) and makes a
//! native transfer, on EntryPoint v0.7 and v0.8; the userOpHash computed locally equals
//! `EntryPoint.getUserOpHash` on anvil.

use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::primitives::{address, b256, utils::parse_ether, Bytes, B256, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use alloy::sol_types::SolCall;
use kms_chain::bundler::BundlerClient;
use kms_chain::signature::stub_owner_signature;
use kms_chain::userop::v0_7::{GasLimits, UserOperation};
use kms_chain::userop::v0_8;
use kms_contracts::{AgentAccount, AgentAccountFactory, IEntryPointV07, IEntryPointV08};
use kms_e2e::stack::Stack;
use rstest::rstest;

/// A fixed test owner key (k256), not one of anvil's dev keys.
const OWNER_KEY: B256 = b256!("0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6");

#[derive(Clone, Copy)]
enum Version {
    V07,
    V08,
}

#[rstest]
#[case::v07(Version::V07)]
#[case::v08(Version::V08)]
#[tokio::test(flavor = "multi_thread")]
async fn owner_userop_deploys_account_and_transfers(#[case] version: Version) {
    let stack = Stack::start().unwrap_or_else(|e| panic!("{e}"));
    let info = stack.info().clone();
    let (entry_point, factory_address, bundler_url) = match version {
        Version::V07 => (
            info.entry_point_v07,
            info.account_factory_v07,
            info.bundler_url.clone(),
        ),
        Version::V08 => (
            info.entry_point_v08,
            info.account_factory_v08,
            info.bundler_url_v08
                .clone()
                .expect("stack.sh serves v0.8 with Alto"),
        ),
    };

    let deployer = PrivateKeySigner::from_bytes(&info.deployer_private_key).unwrap();
    let provider = ProviderBuilder::new()
        .wallet(deployer)
        .connect_http(info.rpc_url.parse().unwrap());
    assert_eq!(provider.get_chain_id().await.unwrap(), info.chain_id);
    let bundler = BundlerClient::new(bundler_url.as_str()).unwrap();
    let supported = bundler.supported_entry_points().await.unwrap();
    assert!(
        supported.contains(&entry_point),
        "bundler serves {supported:?}"
    );

    let owner = PrivateKeySigner::from_bytes(&OWNER_KEY).unwrap();
    let salt = U256::from(42);
    let factory = AgentAccountFactory::new(factory_address, &provider);
    let sender = factory
        .getAddress(owner.address(), salt)
        .call()
        .await
        .unwrap();
    assert!(
        provider.get_code_at(sender).await.unwrap().is_empty(),
        "counterfactual"
    );

    // Fund the counterfactual address from the deployer key.
    let funding = TransactionRequest::default()
        .with_to(sender)
        .with_value(parse_ether("1").unwrap());
    let tx = provider
        .send_transaction(funding)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(tx.status());

    // A fresh chain per test: a fixed recipient is fine.
    let recipient = address!("0x000000000000000000000000000000000000bEEF");
    let value = parse_ether("0.1").unwrap();
    let call_data = AgentAccount::executeCall {
        target: recipient,
        value,
        data: Bytes::new(),
    }
    .abi_encode();
    let factory_data = AgentAccountFactory::createAccountCall {
        owner: owner.address(),
        salt,
    }
    .abi_encode();

    let nonce = IEntryPointV07::new(entry_point, &provider)
        .getNonce(sender, Default::default())
        .call()
        .await
        .unwrap();
    assert_eq!(nonce, U256::ZERO);

    let fees = bundler
        .user_operation_gas_price()
        .await
        .unwrap()
        .fast
        .as_u128s()
        .unwrap();
    let mut op = UserOperation::new(sender, nonce, call_data)
        .with_factory(factory_address, factory_data)
        .with_fees(fees.0, fees.1)
        .with_signature(stub_owner_signature());
    let estimate = bundler
        .estimate_user_operation_gas(&op, entry_point)
        .await
        .unwrap();
    op = op.with_gas(GasLimits::try_from(&estimate).unwrap());
    assert!(
        op.verification_gas_limit > 100_000,
        "deployment is estimated: {estimate:?}"
    );

    // The local hash equals the EntryPoint's.
    let hash = match version {
        Version::V07 => {
            let local = op.hash(entry_point, info.chain_id);
            let onchain = IEntryPointV07::new(entry_point, &provider)
                .getUserOpHash(op.to_packed())
                .call()
                .await
                .unwrap();
            assert_eq!(local, onchain, "v0.7 userOpHash");
            local
        }
        Version::V08 => {
            let local = v0_8::user_op_hash(&op, entry_point, info.chain_id).unwrap();
            let ep = IEntryPointV08::new(entry_point, &provider);
            let onchain = ep.getUserOpHash(op.to_packed()).call().await.unwrap();
            assert_eq!(local, onchain, "v0.8 userOpHash");
            assert_eq!(
                ep.getDomainSeparatorV4().call().await.unwrap(),
                v0_8::domain_separator(entry_point, info.chain_id)
            );
            local
        }
    };

    // Owner signature: 65 bytes, raw ECDSA over the userOpHash itself, v = 27/28.
    let signature = owner.sign_hash_sync(&hash).unwrap().as_bytes();
    assert!(signature[64] == 27 || signature[64] == 28);
    op = op.with_signature(signature.to_vec());

    let balance_before = provider.get_balance(recipient).await.unwrap();
    let submitted = bundler
        .send_user_operation(&op, entry_point)
        .await
        .unwrap_or_else(|e| panic!("eth_sendUserOperation failed: {e}\n{}", stack.output_tail()));
    assert_eq!(submitted, hash, "bundler's userOpHash");

    let receipt = bundler
        .wait_for_receipt(
            &kms_chain::bundler::ExpectedReceipt::of(&op, hash, entry_point),
            Duration::from_secs(60),
            Duration::from_millis(100),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", stack.output_tail()));
    assert!(receipt.success, "{receipt:?}");
    assert_eq!(receipt.sender, sender);
    assert_eq!(receipt.user_op_hash, hash);
    assert_eq!(receipt.entry_point, entry_point);
    assert_eq!(receipt.receipt.status, Some(U256::from(1)));

    assert!(
        !provider.get_code_at(sender).await.unwrap().is_empty(),
        "account deployed"
    );
    let account = AgentAccount::new(sender, &provider);
    assert_eq!(account.owner().call().await.unwrap(), owner.address());
    assert_eq!(account.entryPoint().call().await.unwrap(), entry_point);
    assert_eq!(
        provider.get_balance(recipient).await.unwrap() - balance_before,
        value
    );
}
