//! The chain side of an e2e test: a [`ChainClient`] for one EntryPoint version of a running
//! [`Stack`](crate::stack::Stack), plus what only tests need (setting balances, asking the
//! EntryPoint directly what it thinks of an operation, building operations a bundler's
//! estimation would refuse).

use std::time::Duration;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::{BlockNumberOrTag, TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use kms_chain::account::Call;
use kms_chain::bundler::UserOperationReceipt;
use kms_chain::client::{
    ChainClient, ChainConfig, ChainError, GasCeilings, NonceChoice, OpRequest, PreparedOp,
};
use kms_chain::nonce::NonceKey;
use kms_chain::revert::{self, DecodedRevert};
use kms_chain::session::SessionGrant;
use kms_chain::signature::stub_session_signature;
use kms_chain::userop::v0_7::{GasLimits, UserOperation};
use kms_chain::userop::{EntryPoint, EntryPointVersion};
use kms_contracts::{IEntryPointV07, TestToken};

use crate::owner::{Owner, OwnerError};
use crate::stack::StackInfo;

/// How long tests wait for a UserOperation receipt.
pub const RECEIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Gas limits generous enough for any of the project's operations, for operations built
/// without estimation ([`ChainEnv::unestimated_agent_op`]).
pub const FIXED_GAS: GasLimits = GasLimits {
    pre_verification_gas: U256::from_limbs([100_000, 0, 0, 0]),
    verification_gas_limit: 400_000,
    call_gas_limit: 200_000,
    paymaster_verification_gas_limit: 0,
    paymaster_post_op_gas_limit: 0,
};

/// A harness step failed.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// The chain client failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The TA side failed.
    #[error(transparent)]
    Owner(#[from] OwnerError),
    /// A node call of the harness failed.
    #[error("node: {0}")]
    Node(String),
    /// An operation was included but its execution failed.
    #[error("user operation {0} was included but failed: {1:?}")]
    OpFailed(alloy::primitives::B256, Box<UserOperationReceipt>),
}

/// The [`ChainConfig`] of `version` on the stack described by `info`.
pub fn chain_config(info: &StackInfo, version: EntryPointVersion) -> ChainConfig {
    let (entry_point, factory, bundler) = match version {
        EntryPointVersion::V07 => (
            info.entry_point_v07,
            info.account_factory_v07,
            info.bundler_url.clone(),
        ),
        EntryPointVersion::V08 => (
            info.entry_point_v08,
            info.account_factory_v08,
            info.bundler_url_v08
                .clone()
                .unwrap_or_else(|| info.bundler_url.clone()),
        ),
    };
    let mut config = ChainConfig::new(
        info.rpc_url.parse().expect("stack rpc url"),
        bundler.parse().expect("stack bundler url"),
        EntryPoint {
            version,
            address: entry_point,
        },
        factory,
        info.session_key_validator,
    );
    config.expected_chain_id = Some(info.chain_id);
    config.eip7702_delegate = Some(info.eip7702_account);
    // The harness builds what an attacker would (absurd gas included) to show the chain refusing
    // it; the companion's own ceilings are tested through the companion.
    config.ceilings = GasCeilings::NONE;
    config
}

/// One EntryPoint version of a running stack.
#[derive(Debug, Clone)]
pub struct ChainEnv {
    /// The stack.
    pub info: StackInfo,
    /// The client.
    pub client: ChainClient,
}

impl ChainEnv {
    /// Connects (with the client's start-up checks).
    pub async fn connect(info: &StackInfo, version: EntryPointVersion) -> Result<Self, EnvError> {
        Ok(Self {
            info: info.clone(),
            client: ChainClient::connect(chain_config(info, version)).await?,
        })
    }

    /// The EntryPoint version.
    pub fn version(&self) -> EntryPointVersion {
        self.client.entry_point().version
    }

    /// Sets the balance of `address` (anvil_setBalance).
    pub async fn set_balance(&self, address: Address, wei: U256) -> Result<(), EnvError> {
        self.client
            .provider()
            .raw_request::<_, ()>("anvil_setBalance".into(), (address, wei))
            .await
            .map_err(|e| EnvError::Node(e.to_string()))
    }

    /// The native balance of `address`.
    pub async fn balance(&self, address: Address) -> Result<U256, EnvError> {
        Ok(self.client.balance(address).await?)
    }

    /// The latest block's timestamp.
    pub async fn now(&self) -> Result<u64, EnvError> {
        let block = self
            .client
            .provider()
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .map_err(|e| EnvError::Node(e.to_string()))?
            .ok_or_else(|| EnvError::Node("no latest block".into()))?;
        Ok(block.header.timestamp)
    }

    /// What the EntryPoint itself says of `op`: `handleOps([op])` as an `eth_call` from an EOA.
    /// `Ok(())` if it would go through, else the decoded revert (`FailedOp` /
    /// `FailedOpWithRevert` unwrapped to the validator's error), or `Err(None)` for a revert
    /// that does not decode.
    pub async fn entry_point_verdict(
        &self,
        op: &UserOperation,
    ) -> Result<(), Option<DecodedRevert>> {
        let beneficiary = Address::repeat_byte(0xbe);
        let ep = IEntryPointV07::new(self.client.entry_point().address, self.client.provider());
        match ep
            .handleOps(vec![op.to_packed()], beneficiary)
            .from(beneficiary)
            .call()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(e.as_revert_data().and_then(|d| revert::decode(&d))),
        }
    }

    /// Deploys the account of (`owner`, `salt`) if needed and registers `grants` on it, in one
    /// owner operation signed by the TA; returns the account and the receipt.
    pub async fn grant(
        &self,
        owner: &Owner,
        salt: U256,
        grants: &[SessionGrant],
    ) -> Result<(Address, UserOperationReceipt), EnvError> {
        let prepared = self
            .client
            .prepare_grants(owner.address, salt, grants)
            .await?;
        let signature = owner.sign_user_op(prepared.user_op_hash).await?;
        let receipt = self.submit_and_wait(&prepared.signed(signature)).await?;
        Ok((prepared.op.sender, receipt))
    }

    /// Submits a signed operation and waits for a successful receipt.
    pub async fn submit_and_wait(
        &self,
        op: &UserOperation,
    ) -> Result<UserOperationReceipt, EnvError> {
        let submission = self.client.submit(op).await?;
        let receipt = self
            .client
            .wait_for_receipt(
                &self.client.expected_receipt(op, submission.user_op_hash),
                RECEIPT_TIMEOUT,
            )
            .await?;
        if !receipt.success {
            return Err(EnvError::OpFailed(
                submission.user_op_hash,
                Box::new(receipt),
            ));
        }
        Ok(receipt)
    }

    /// An agent operation with [`FIXED_GAS`] instead of an estimate (whose simulation a policy
    /// violation would make fail), on the agent's nonce key, with the session stub signature.
    pub async fn unestimated_agent_op(
        &self,
        account: Address,
        agent_key: Address,
        calls: Vec<Call>,
    ) -> Result<PreparedOp, EnvError> {
        Ok(self
            .client
            .prepare(OpRequest {
                sender: account,
                init: None,
                nonce: NonceChoice::Next(NonceKey::for_agent(agent_key)),
                calls,
                stub_signature: stub_session_signature(account, agent_key),
                gas: Some(FIXED_GAS),
            })
            .await?)
    }

    /// An agent operation built as given, past every estimate: `calls` from `account` under
    /// `nonce`, with the session stub signature of `agent_key`, `gas` as the limits and, when
    /// given, `fees` as (maxFeePerGas, maxPriorityFeePerGas) instead of the bundler's. The
    /// userOpHash is that of the final operation.
    pub async fn custom_agent_op(
        &self,
        account: Address,
        agent_key: Address,
        nonce: NonceChoice,
        calls: Vec<Call>,
        gas: GasLimits,
        fees: Option<(u128, u128)>,
    ) -> Result<PreparedOp, EnvError> {
        let mut prepared = self
            .client
            .prepare(OpRequest {
                sender: account,
                init: None,
                nonce,
                calls,
                stub_signature: stub_session_signature(account, agent_key),
                gas: Some(gas),
            })
            .await?;
        if let Some((max_fee, priority)) = fees {
            prepared.op = prepared.op.with_fees(max_fee, priority);
            prepared.user_op_hash = self
                .client
                .entry_point()
                .user_op_hash(&prepared.op, self.client.chain_id())
                .map_err(|e| EnvError::Node(e.to_string()))?;
        }
        Ok(prepared)
    }

    /// Mints `amount` of the stack's `TestToken` to `to` (anyone may mint it), from a fresh
    /// funded EOA; fails unless the transaction succeeds.
    pub async fn mint_test_token(&self, to: Address, amount: U256) -> Result<(), EnvError> {
        let minter = self
            .funded_signer(U256::from(10u64).pow(U256::from(18)))
            .await?;
        let data = TestToken::mintCall { to, amount }.abi_encode().into();
        let receipt = self
            .send_from(&minter, self.info.test_token, data, None)
            .await?;
        if !receipt.status() {
            return Err(EnvError::Node(format!(
                "TestToken.mint reverted: {receipt:?}"
            )));
        }
        Ok(())
    }

    /// `who`'s balance of the stack's `TestToken`.
    pub async fn test_token_balance(&self, who: Address) -> Result<U256, EnvError> {
        TestToken::new(self.info.test_token, self.client.provider())
            .balanceOf(who)
            .call()
            .await
            .map_err(|e| EnvError::Node(e.to_string()))
    }

    /// The EntryPoint deposit of `account` (`balanceOf`).
    pub async fn deposit(&self, account: Address) -> Result<U256, EnvError> {
        IEntryPointV07::new(self.client.entry_point().address, self.client.provider())
            .balanceOf(account)
            .call()
            .await
            .map_err(|e| EnvError::Node(e.to_string()))
    }

    /// A fresh EOA (random key held by the test) with a balance of `wei`.
    pub async fn funded_signer(&self, wei: U256) -> Result<PrivateKeySigner, EnvError> {
        let signer = PrivateKeySigner::random();
        self.set_balance(signer.address(), wei).await?;
        Ok(signer)
    }

    /// Sends a transaction from `signer` to `to` with `data` and waits for its receipt, whatever
    /// its status. With `gas_limit` the transaction is sent without estimation, so one meant to
    /// revert is mined (and its receipt says so) rather than refused by the estimate.
    pub async fn send_from(
        &self,
        signer: &PrivateKeySigner,
        to: Address,
        data: Bytes,
        gas_limit: Option<u64>,
    ) -> Result<TransactionReceipt, EnvError> {
        let provider = ProviderBuilder::new()
            .wallet(signer.clone())
            .connect_http(self.info.rpc_url.parse().expect("stack rpc url"));
        let mut tx = TransactionRequest::default()
            .with_from(signer.address())
            .with_to(to)
            .with_input(data);
        if let Some(gas) = gas_limit {
            tx = tx.with_gas_limit(gas);
        }
        provider
            .send_transaction(tx)
            .await
            .map_err(|e| EnvError::Node(e.to_string()))?
            .get_receipt()
            .await
            .map_err(|e| EnvError::Node(e.to_string()))
    }

    /// `handleOps(ops, beneficiary)` sent as a transaction by `signer` straight to the
    /// EntryPoint, past any bundler, with `gas_limit` (no estimation); the receipt, whatever its
    /// status.
    pub async fn handle_ops_from(
        &self,
        signer: &PrivateKeySigner,
        ops: &[UserOperation],
        beneficiary: Address,
        gas_limit: u64,
    ) -> Result<TransactionReceipt, EnvError> {
        let data = IEntryPointV07::handleOpsCall {
            ops: ops.iter().map(UserOperation::to_packed).collect(),
            beneficiary,
        }
        .abi_encode();
        self.send_from(
            signer,
            self.client.entry_point().address,
            data.into(),
            Some(gas_limit),
        )
        .await
    }
}
