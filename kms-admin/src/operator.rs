//! `operator-address [--create]`.

use alloy::primitives::Address;
use alloy::providers::Provider;
use kms_proto::OperatorKey;
use serde_json::json;

use crate::ctx::{rpc_unreachable, Ctx};
use crate::error::{AdminError, Exit, Result};
use crate::fmt::{ether, ts};
use crate::{audit_if_db, Report};

/// `operator-address [--create]`: the operator key's address, and its balance when an RPC URL
/// is configured. Creating the key is explicit (`--create`): reading must not make key
/// material behind the operator's back, and a new operator address has to be funded and named
/// as the revoker in new session grants anyway.
pub async fn address(ctx: &Ctx, create: bool) -> Result<Report> {
    let tee = ctx.tee()?;
    let existed = match tee
        .call_async(&OperatorKey {
            create_if_missing: false,
        })
        .await
    {
        Ok(_) => true,
        Err(kms_tee_client::TeeError::Ta(kms_proto::TaError::OperatorKeyMissing)) => false,
        Err(e) => return Err(e.into()),
    };
    if !existed && !create {
        return Err(AdminError::new(
            Exit::UnknownKey,
            "the TA has no operator key yet",
        )
        .hint("create it with `kms-admin operator-address --create`, fund it, and name it as the revoker of new sessions"));
    }
    let info = tee
        .call_async(&OperatorKey {
            create_if_missing: create,
        })
        .await?;
    let address = Address::from(info.address);
    let created_now = !existed;
    if created_now {
        audit_if_db(ctx, "OperatorKeyCreate", &address.to_string()).await;
    }
    let mut human = format!(
        "Operator address: {address}\nCreated:          {}{}\n",
        ts(i64::try_from(info.created_at).unwrap_or(i64::MAX)),
        if created_now { " (just now)" } else { "" }
    );
    let mut json = json!({
        "address": address.to_string(),
        "publicKey": format!("0x{}", hex::encode(&info.public_key)),
        "createdAt": info.created_at,
        "createdNow": created_now,
        "balanceWei": null,
        "chainId": null,
    });
    let balance = match ctx.provider().await {
        Ok(Some((provider, chain_id))) => match provider.get_balance(address).await {
            Ok(b) => Ok(Some((b, chain_id))),
            Err(e) => Err(rpc_unreachable(format!(
                "reading the balance: {}",
                ctx.redact(&e)
            ))),
        },
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    let failure = match balance {
        Ok(Some((b, chain_id))) => {
            human.push_str(&format!(
                "Balance:          {} ({b} wei) on chain {chain_id}\n",
                ether(b)
            ));
            if b.is_zero() {
                human.push_str("Warning: the operator cannot pay for revokeSession transactions until it is funded.\n");
            }
            json["balanceWei"] = json!(b.to_string());
            json["chainId"] = json!(chain_id);
            None
        }
        Ok(None) => {
            human.push_str(
                "Balance:          unknown (no RPC URL configured: set --rpc-url / KMS_RPC_URL)\n",
            );
            None
        }
        Err(e) => {
            human.push_str("Balance:          unknown (the node could not be read)\n");
            Some(e)
        }
    };
    Ok(Report {
        human,
        json,
        failure,
    })
}
