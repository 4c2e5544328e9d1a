//! [`NodeClient`]: what needs only a node and the `SessionKeyValidator` — session reads, node
//! fees, balances and the operator's `revokeSession` transaction — without a bundler or an
//! EntryPoint.
//!
//! [`ChainClient`](crate::client::ChainClient) holds one and delegates these calls to it;
//! `kms-admin` uses one on its own, so an operator can revoke a session (and read balances and
//! spends) with only an RPC URL and the validator address, even while the bundler is down.
//!
//! No URL is ever put into an error: node URLs often carry API keys.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::eips::BlockId;
use alloy::network::TransactionBuilder;
use alloy::primitives::{aliases::U48, Address, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{BlockNumberOrTag, TransactionRequest};
use kms_contracts::{AgentAccount, SessionKeyValidator};

use crate::account::{AccountKind, Call};
use crate::client::{ChainError, Fees, RevokeOutcome};
use crate::erc7579::{IERC7579Account, MODULE_TYPE_VALIDATOR};
use crate::http::HttpLimits;
use crate::nonce::NonceKey;
use crate::operator::{revoke_fees, OperatorSigner, OperatorSignerError, RevokeSessionTx};
use crate::session::{
    revoke_call_data, selector_of, ModuleState, OnChainSession, Selector, SessionSnapshot,
    TargetState, ValidatorPath, MAX_UINT48,
};

/// A node and the session key validator on it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NodeClient {
    provider: DynProvider,
    validator: Address,
    chain_id: u64,
    redact: Arc<Vec<String>>,
}

impl NodeClient {
    /// Connects to the node at `rpc_url` and checks it: `eth_chainId` answers (and equals
    /// `expected_chain_id` when given) and `validator` has code.
    pub async fn connect(
        rpc_url: reqwest::Url,
        validator: Address,
        expected_chain_id: Option<u64>,
    ) -> Result<Self, ChainError> {
        Self::connect_with(rpc_url, validator, expected_chain_id, HttpLimits::default()).await
    }

    /// [`NodeClient::connect`] with the given request bounds (timeouts, body cap).
    pub async fn connect_with(
        rpc_url: reqwest::Url,
        validator: Address,
        expected_chain_id: Option<u64>,
        limits: HttpLimits,
    ) -> Result<Self, ChainError> {
        let provider =
            crate::http::node_provider(rpc_url.clone(), limits).map_err(|e| ChainError::Node {
                during: "building the HTTP client",
                message: e.without_url().to_string(),
            })?;
        let mut node = Self {
            provider,
            validator,
            chain_id: 0,
            redact: Arc::new(redactions(&[&rpc_url])),
        };
        let chain_id = node
            .provider
            .get_chain_id()
            .await
            .map_err(|e| node.node_err("calling eth_chainId", e))?;
        if let Some(configured) = expected_chain_id.filter(|c| *c != chain_id) {
            return Err(ChainError::NodeChainIdMismatch {
                node: chain_id,
                configured,
            });
        }
        node.chain_id = chain_id;
        let code = node
            .provider
            .get_code_at(validator)
            .await
            .map_err(|e| node.node_err("reading code", e))?;
        if code.is_empty() {
            return Err(ChainError::NoCode {
                what: "session key validator",
                address: validator,
            });
        }
        Ok(node)
    }

    /// A client over an existing provider whose chain id is already known (for
    /// [`ChainClient`](crate::client::ChainClient), which checks more at connection).
    pub(crate) fn from_parts(
        provider: DynProvider,
        validator: Address,
        chain_id: u64,
        redact: Vec<String>,
    ) -> Self {
        Self {
            provider,
            validator,
            chain_id,
            redact: Arc::new(redact),
        }
    }

    /// The chain id (checked at connection).
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The session key validator.
    pub fn validator(&self) -> Address {
        self.validator
    }

    /// The node provider.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// A [`ChainError::Node`] for a failure `during` something, with URLs cut out.
    pub(crate) fn node_err(&self, during: &'static str, e: impl std::fmt::Display) -> ChainError {
        let mut message = e.to_string();
        for r in self.redact.iter() {
            message = message.replace(r.as_str(), "<url>");
        }
        // Cut after redacting, so a URL is never cut in half and left partly in.
        let message = crate::http::truncate(&message, 4096);
        ChainError::Node { during, message }
    }

    /// The native balance of `address`.
    pub async fn balance(&self, address: Address) -> Result<U256, ChainError> {
        self.provider
            .get_balance(address)
            .await
            .map_err(|e| self.node_err("reading a balance", e))
    }

    /// The session validator `account` delegates session signatures to (`validator()` of an
    /// `AgentAccount`), or `None` when it has no code or no such function. An account made by an
    /// earlier factory keeps the validator it was built with.
    pub async fn account_validator(&self, account: Address) -> Result<Option<Address>, ChainError> {
        if self
            .provider
            .get_code_at(account)
            .await
            .map_err(|e| self.node_err("reading code", e))?
            .is_empty()
        {
            return Ok(None);
        }
        Ok(AgentAccount::new(account, &self.provider)
            .validator()
            .call()
            .await
            .ok())
    }

    /// The kind of the account at `account`, detected on chain: an ERC-7579 account when it
    /// answers `supportsModule(1)` (validator modules) with true, an `AgentAccount` when it answers
    /// `validator()`; `None` without code or when it answers neither. A node failure is an error;
    /// a call the account reverts (or answers with nothing) only means "not this kind".
    pub async fn account_kind(&self, account: Address) -> Result<Option<AccountKind>, ChainError> {
        if !self.has_code(account).await? {
            return Ok(None);
        }
        let erc7579 = IERC7579Account::new(account, &self.provider)
            .supportsModule(MODULE_TYPE_VALIDATOR)
            .call()
            .await;
        if self.answered("calling supportsModule", erc7579)? == Some(true) {
            return Ok(Some(AccountKind::Erc7579));
        }
        let agent = AgentAccount::new(account, &self.provider)
            .validator()
            .call()
            .await;
        Ok(self
            .answered("calling validator()", agent)?
            .map(|_| AccountKind::AgentAccount))
    }

    /// The ERC-7579 `accountId()` of `account` (`vendor.account.semver`), or `None` when it does
    /// not answer one.
    pub async fn account_id(&self, account: Address) -> Result<Option<String>, ChainError> {
        let id = IERC7579Account::new(account, &self.provider)
            .accountId()
            .call()
            .await;
        self.answered("calling accountId()", id)
    }

    /// Whether the ERC-7579 account `account` has this validator installed as its validator
    /// module, by the account's own `isModuleInstalled(1, validator, "")` (false when it does not
    /// answer).
    pub async fn is_module_installed(&self, account: Address) -> Result<bool, ChainError> {
        let installed = IERC7579Account::new(account, &self.provider)
            .isModuleInstalled(MODULE_TYPE_VALIDATOR, self.validator, Default::default())
            .call()
            .await;
        Ok(self
            .answered("calling isModuleInstalled", installed)?
            .unwrap_or(false))
    }

    /// The validator's module state for `account` (`moduleState`): installed, generation, lanes.
    pub async fn module_state(&self, account: Address) -> Result<ModuleState, ChainError> {
        let m = SessionKeyValidator::new(self.validator, &self.provider)
            .moduleState(account)
            .call()
            .await
            .map_err(|e| self.node_err("calling validator.moduleState", e))?;
        Ok(ModuleState {
            installed: m.installed,
            generation: m.generation,
            lanes: m.lanes,
        })
    }

    /// The stored session of `key` on `account` (`getSession`; all zero if never granted).
    pub async fn session(
        &self,
        account: Address,
        key: Address,
    ) -> Result<OnChainSession, ChainError> {
        SessionKeyValidator::new(self.validator, &self.provider)
            .getSession(account, key)
            .call()
            .await
            .map(OnChainSession::from)
            .map_err(|e| self.node_err("calling validator.getSession", e))
    }

    /// The lane the validator gave `key` on the ERC-7579 account `account` at its first grant
    /// there (`getSession(…).lane`), or `None` when the key was never granted a session on it.
    pub async fn session_lane(
        &self,
        account: Address,
        key: Address,
    ) -> Result<Option<u16>, ChainError> {
        let lane = self.session(account, key).await?.lane;
        Ok((lane != 0).then_some(lane))
    }

    /// Whether `address` has code.
    async fn has_code(&self, address: Address) -> Result<bool, ChainError> {
        self.provider
            .get_code_at(address)
            .await
            .map(|c| !c.is_empty())
            .map_err(|e| self.node_err("reading code", e))
    }

    /// A view call's answer: `Some` when it answered, `None` when the contract reverted or
    /// answered nothing decodable, an error when the node failed (or answered an error other than
    /// a revert).
    fn answered<T>(
        &self,
        during: &'static str,
        result: Result<T, alloy::contract::Error>,
    ) -> Result<Option<T>, ChainError> {
        match result {
            Ok(v) => Ok(Some(v)),
            Err(alloy::contract::Error::TransportError(e)) => match e.as_error_resp() {
                // A revert: JSON-RPC code 3, or "execution reverted" (with or without data).
                Some(p) if p.code == 3 || p.message.to_ascii_lowercase().contains("revert") => {
                    Ok(None)
                }
                _ => Err(self.node_err(during, e)),
            },
            // No data, or data that does not decode as the answer.
            Err(_) => Ok(None),
        }
    }

    /// Fees from the node: priority = `eth_maxPriorityFeePerGas`, max = 2 × latest base fee +
    /// priority.
    pub async fn node_fees(&self) -> Result<Fees, ChainError> {
        let (base, priority) = self.base_fee_and_priority().await?;
        Ok(Fees {
            max_fee_per_gas: base.saturating_mul(2).saturating_add(priority),
            max_priority_fee_per_gas: priority,
        })
    }

    /// The latest block's base fee and `eth_maxPriorityFeePerGas`.
    async fn base_fee_and_priority(&self) -> Result<(u128, u128), ChainError> {
        let priority = self
            .provider
            .get_max_priority_fee_per_gas()
            .await
            .map_err(|e| self.node_err("calling eth_maxPriorityFeePerGas", e))?;
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .map_err(|e| self.node_err("reading the latest block", e))?
            .ok_or_else(|| self.node_err("reading the latest block", "no latest block"))?;
        let base = u128::from(block.header.base_fee_per_gas.unwrap_or_default());
        Ok((base, priority))
    }

    /// Reads the session of `key` on `account` with the permission of each of `targets`, at
    /// the latest block, and the budget period containing that block's timestamp (see
    /// [`NodeClient::read_session_for_calls`]).
    pub async fn read_session(
        &self,
        account: Address,
        key: Address,
        targets: &[Address],
    ) -> Result<SessionSnapshot, ChainError> {
        let probes: Vec<(Address, Selector)> =
            targets.iter().map(|t| (*t, Selector::ZERO)).collect();
        self.read_session_probes(account, key, &probes, None).await
    }

    /// Reads what the pre-check of `calls` at time `at` (unix seconds: the caller's "now", which
    /// is what bundlers check validity windows against) needs, in one `readSession` call at the
    /// latest block: the session of `key` on `account`, the permission of each call's target,
    /// whether each call's selector is listed for it, and the budget period containing `at` with
    /// what it has spent.
    pub async fn read_session_for_calls(
        &self,
        account: Address,
        key: Address,
        calls: &[Call],
        at: u64,
    ) -> Result<SessionSnapshot, ChainError> {
        let probes: Vec<(Address, Selector)> = calls
            .iter()
            .map(|c| (c.to, selector_of(&c.data).unwrap_or_default()))
            .collect();
        self.read_session_probes(account, key, &probes, Some(at))
            .await
    }

    /// [`NodeClient::read_session_for_calls`] on an account of `kind`, with what the validator's
    /// path for that kind needs besides the session, read at the same block: for an ERC-7579
    /// account the module's state ([`ValidatorPath::Erc7579`]). Give both to
    /// [`crate::session::precheck_on`].
    pub async fn read_session_for_calls_on(
        &self,
        kind: AccountKind,
        account: Address,
        key: Address,
        calls: &[Call],
        at: u64,
    ) -> Result<(SessionSnapshot, ValidatorPath), ChainError> {
        let (snapshot, path, _) = self
            .read_session_and_nonce_on(kind, account, key, calls, at, None, None)
            .await?;
        Ok((snapshot, path))
    }

    /// [`NodeClient::read_session_for_calls_on`], and with `nonce` = (EntryPoint, nonce key)
    /// the EntryPoint's next nonce of that key for `account` at the same block, read beside the
    /// session (`getNonce`). At the latest block, or with `block` = (number, timestamp) at that
    /// block (to read again at the block of an earlier snapshot).
    #[allow(clippy::too_many_arguments)]
    pub async fn read_session_and_nonce_on(
        &self,
        kind: AccountKind,
        account: Address,
        key: Address,
        calls: &[Call],
        at: u64,
        nonce: Option<(Address, NonceKey)>,
        block: Option<(u64, u64)>,
    ) -> Result<(SessionSnapshot, ValidatorPath, Option<U256>), ChainError> {
        let probes: Vec<(Address, Selector)> = calls
            .iter()
            .map(|c| (c.to, selector_of(&c.data).unwrap_or_default()))
            .collect();
        let (snapshot, block_id, nonce) = self
            .read_session_probes_at(account, key, &probes, Some(at), nonce, block)
            .await?;
        let path = match kind {
            AccountKind::AgentAccount => ValidatorPath::AgentAccount,
            AccountKind::Erc7579 => {
                let m = SessionKeyValidator::new(self.validator, &self.provider)
                    .moduleState(account)
                    .block(block_id)
                    .call()
                    .await
                    .map_err(|e| self.node_err("calling validator.moduleState", e))?;
                ValidatorPath::Erc7579(ModuleState {
                    installed: m.installed,
                    generation: m.generation,
                    lanes: m.lanes,
                })
            }
        };
        Ok((snapshot, path, nonce))
    }

    async fn read_session_probes(
        &self,
        account: Address,
        key: Address,
        probes: &[(Address, Selector)],
        at: Option<u64>,
    ) -> Result<SessionSnapshot, ChainError> {
        Ok(self
            .read_session_probes_at(account, key, probes, at, None, None)
            .await?
            .0)
    }

    /// The snapshot, the block it was read at, and with `nonce` the EntryPoint's next nonce of
    /// that key at the same block (read concurrently). At the latest block, or at `block` =
    /// (number, timestamp).
    async fn read_session_probes_at(
        &self,
        account: Address,
        key: Address,
        probes: &[(Address, Selector)],
        at: Option<u64>,
        nonce: Option<(Address, NonceKey)>,
        block: Option<(u64, u64)>,
    ) -> Result<(SessionSnapshot, BlockId, Option<U256>), ChainError> {
        let (number, timestamp) = match block {
            Some(b) => b,
            None => {
                let b = self
                    .provider
                    .get_block_by_number(BlockNumberOrTag::Latest)
                    .await
                    .map_err(|e| self.node_err("reading the latest block", e))?
                    .ok_or_else(|| self.node_err("reading the latest block", "no latest block"))?;
                (b.header.number, b.header.timestamp)
            }
        };
        let block_id = BlockId::number(number);
        let mut unique: Vec<(Address, Selector)> = probes.to_vec();
        unique.sort();
        unique.dedup();
        let (targets, selectors): (Vec<Address>, Vec<Selector>) = unique.iter().copied().unzip();
        let at = at.unwrap_or(timestamp).min(MAX_UINT48);
        let validator = SessionKeyValidator::new(self.validator, &self.provider);
        let read_call = validator
            .readSession(account, key, targets, selectors, U48::from(at))
            .block(block_id);
        let (read, nonce) = tokio::try_join!(
            async {
                read_call
                    .call()
                    .await
                    .map_err(|e| self.node_err("reading the session", e))
            },
            async {
                match nonce {
                    None => Ok(None),
                    Some((entry_point, nonce_key)) => {
                        kms_contracts::IEntryPointV07::new(entry_point, &self.provider)
                            .getNonce(account, nonce_key.into())
                            .call()
                            .block(block_id)
                            .await
                            .map(Some)
                            .map_err(|e| self.node_err("calling EntryPoint.getNonce", e))
                    }
                }
            }
        )?;
        let session = OnChainSession::from(read.session);
        let mut permissions = std::collections::BTreeMap::new();
        let mut allowed_targets = std::collections::BTreeMap::new();
        let mut listed_selectors = std::collections::BTreeSet::new();
        for (((target, selector), permission), listed) in unique
            .iter()
            .zip(read.permissions)
            .zip(read.selectorAllowed)
        {
            let state = TargetState::from(permission);
            allowed_targets.insert(*target, session.active && state.allowed);
            permissions.insert(*target, state);
            if listed {
                listed_selectors.insert((*target, *selector));
            }
        }
        let snapshot = SessionSnapshot {
            account,
            key,
            validator: self.validator,
            block_number: number,
            block_timestamp: timestamp,
            remaining_budget: session.remaining_value(),
            session,
            allowed_targets,
            permissions,
            listed_selectors,
            at,
            period_index: read.periodIndex.saturating_to(),
            period_spent: read.spentInPeriod.saturating_to(),
        };
        Ok((snapshot, block_id, nonce))
    }

    /// Revokes the session of `key` on `account` with the operator's `revokeSession`
    /// transaction: checks the session (already revoked: nothing sent; never granted, or another
    /// revoker: an error), fetches the operator's nonce, the node's fees and a gas estimate,
    /// fits them under the TA's ceilings ([`revoke_fees`]: an estimate or a base fee above them
    /// is [`ChainError::OperatorCeiling`]), has `signer` (the TA) sign (the TA may still refuse:
    /// its spend budget), sends the raw transaction and waits up to `timeout` for a successful
    /// receipt.
    pub async fn revoke_session<S: OperatorSigner + ?Sized>(
        &self,
        signer: &S,
        account: Address,
        key: Address,
        timeout: Duration,
    ) -> Result<RevokeOutcome, ChainError> {
        let operator = signer.address();
        let snapshot = self.read_session(account, key, &[]).await?;
        let s = snapshot.session;
        if s.epoch == 0 {
            return Err(ChainError::NoSession { account, key });
        }
        if !s.active {
            return Ok(RevokeOutcome::AlreadyRevoked);
        }
        if s.revoker != operator || operator == Address::ZERO {
            return Err(ChainError::NotRevoker {
                operator,
                revoker: s.revoker,
            });
        }
        let request = TransactionRequest::default()
            .with_from(operator)
            .with_to(self.validator)
            .with_input(revoke_call_data(account, key));
        let (nonce, (base_fee, priority), gas) = tokio::try_join!(
            async {
                self.provider
                    .get_transaction_count(operator)
                    .pending()
                    .await
                    .map_err(|e| self.node_err("reading the operator's nonce", e))
            },
            self.base_fee_and_priority(),
            async {
                self.provider
                    .estimate_gas(request)
                    .await
                    .map_err(|e| self.node_err("estimating revokeSession gas", e))
            },
        )?;
        let fees = revoke_fees(base_fee, priority, gas)?;
        let signed = signer
            .sign_revoke_session(RevokeSessionTx {
                chain_id: self.chain_id,
                nonce,
                max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
                max_fee_per_gas: fees.max_fee_per_gas,
                gas_limit: fees.gas_limit,
                validator: self.validator,
                account,
                agent_key: key,
            })
            .await?;
        if signed.from != operator {
            return Err(OperatorSignerError::WrongSigner {
                expected: operator,
                got: signed.from,
            }
            .into());
        }
        let tx_hash = signed.tx_hash;
        if let Err(e) = self.provider.send_raw_transaction(&signed.raw).await {
            // Re-sending the same raw transaction is harmless (same hash); a node that already
            // has it says so.
            let msg = e.to_string().to_ascii_lowercase();
            if !(msg.contains("already known") || msg.contains("already imported")) {
                return Err(self.node_err("sending the revokeSession transaction", e));
            }
        }
        let start = Instant::now();
        loop {
            let receipt = self
                .provider
                .get_transaction_receipt(tx_hash)
                .await
                .map_err(|e| self.node_err("reading the revokeSession receipt", e))?;
            if let Some(r) = receipt {
                if !r.status() {
                    return Err(ChainError::TransactionReverted { tx_hash });
                }
                return Ok(RevokeOutcome::Revoked {
                    tx_hash,
                    block_number: r.block_number.unwrap_or_default(),
                });
            }
            if start.elapsed() >= timeout {
                return Err(ChainError::TransactionTimeout {
                    tx_hash,
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The strings to cut out of error messages: each URL in its usual printed forms.
pub(crate) fn redactions(urls: &[&reqwest::Url]) -> Vec<String> {
    let mut out = Vec::new();
    for url in urls {
        let s = url.as_str().to_owned();
        out.push(s.trim_end_matches('/').to_owned());
        out.push(s);
    }
    // Longest first, so a URL is never half-replaced by a shorter prefix.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out.retain(|s| !s.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_longest_first() {
        let a: reqwest::Url = "https://bundler.example/rpc?apikey=SECRET".parse().unwrap();
        let b: reqwest::Url = "http://127.0.0.1:8545".parse().unwrap();
        let r = redactions(&[&a, &b]);
        let mut msg =
            "error sending request for url (https://bundler.example/rpc?apikey=SECRET) and http://127.0.0.1:8545/"
                .to_owned();
        for s in &r {
            msg = msg.replace(s.as_str(), "<url>");
        }
        assert!(!msg.contains("SECRET"), "{msg}");
        assert!(!msg.contains("127.0.0.1"), "{msg}");
    }

    #[tokio::test]
    async fn an_unreachable_node_is_a_node_error_without_its_url() {
        // Port 9 (discard) on localhost: nothing listens in the test environment.
        let url: reqwest::Url = "http://127.0.0.1:9/?key=SECRET".parse().unwrap();
        let err = NodeClient::connect(url, Address::ZERO, None)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ChainError::Node { during, .. } if during == "calling eth_chainId"),
            "{msg}"
        );
        assert!(!msg.contains("SECRET"), "{msg}");
    }

    /// A node on 127.0.0.1 that answers every connection with `reply` (or, with `None`, holds
    /// it without answering).
    async fn fake_node(reply: Option<String>) -> reqwest::Url {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/?key=SECRET", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                match &reply {
                    None => held.push(sock),
                    Some(body) => {
                        let mut buf = [0u8; 8192];
                        let _ = sock.read(&mut buf).await;
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = sock.write_all(head.as_bytes()).await;
                        let _ = sock.write_all(body.as_bytes()).await;
                    }
                }
            }
        });
        url.parse().unwrap()
    }

    #[tokio::test]
    async fn a_stalled_node_times_out() {
        let url = fake_node(None).await;
        let limits = HttpLimits {
            timeout: std::time::Duration::from_millis(300),
            ..HttpLimits::default()
        };
        let err = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            NodeClient::connect_with(url, Address::ZERO, None, limits),
        )
        .await
        .expect("the client's own timeout ends the call")
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("timed out") || msg.contains("timeout"),
            "{msg}"
        );
        assert!(!msg.contains("SECRET"), "{msg}");
    }

    #[tokio::test]
    async fn a_flooding_or_lying_node_yields_a_short_error() {
        let limits = HttpLimits {
            max_body_bytes: 64 * 1024,
            ..HttpLimits::default()
        };
        // Over the cap.
        let url = fake_node(Some("x".repeat(1 << 20))).await;
        let err = NodeClient::connect_with(url, Address::ZERO, None, limits)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("over 65536 bytes"), "{msg}");
        // Under the cap but not JSON-RPC: the error quotes a prefix only.
        let url = fake_node(Some("y".repeat(60_000))).await;
        let err = NodeClient::connect_with(url, Address::ZERO, None, limits)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.len() < 1_000, "{}", msg.len());
        assert!(msg.contains("60000 bytes in all"), "{msg}");
    }
}
