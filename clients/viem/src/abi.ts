// ABI fragments of the project's contracts, copied from contracts/artifacts/*.json (the
// unit test test/unit/abi.test.ts checks they are still the artifacts' own).

/** `AgentAccount`'s `execute(target, value, data)` and `executeBatch((target, value, data)[])`. */
export const agentAccountAbi = [
  {
    "type": "function",
    "name": "execute",
    "inputs": [
      {
        "name": "target",
        "type": "address"
      },
      {
        "name": "value",
        "type": "uint256"
      },
      {
        "name": "data",
        "type": "bytes"
      }
    ],
    "outputs": [],
    "stateMutability": "nonpayable"
  },
  {
    "type": "function",
    "name": "executeBatch",
    "inputs": [
      {
        "name": "calls",
        "type": "tuple[]",
        "components": [
          {
            "name": "target",
            "type": "address"
          },
          {
            "name": "value",
            "type": "uint256"
          },
          {
            "name": "data",
            "type": "bytes"
          }
        ]
      }
    ],
    "outputs": [],
    "stateMutability": "nonpayable"
  }
] as const

/** `AgentAccount`'s custom errors. */
export const agentAccountErrorsAbi = [
  {
    "type": "error",
    "name": "AccountUnauthorized",
    "inputs": [
      {
        "name": "sender",
        "type": "address"
      }
    ]
  },
  {
    "type": "error",
    "name": "AlreadyInitialized",
    "inputs": []
  },
  {
    "type": "error",
    "name": "InvalidOwner",
    "inputs": []
  },
  {
    "type": "error",
    "name": "InvalidShortString",
    "inputs": []
  },
  {
    "type": "error",
    "name": "NotEntryPointOrOwner",
    "inputs": [
      {
        "name": "caller",
        "type": "address"
      }
    ]
  },
  {
    "type": "error",
    "name": "NotFromEntryPoint",
    "inputs": [
      {
        "name": "caller",
        "type": "address"
      }
    ]
  },
  {
    "type": "error",
    "name": "StringTooLong",
    "inputs": [
      {
        "name": "str",
        "type": "string"
      }
    ]
  }
] as const

/** `SessionKeyValidator`'s custom errors: what a refused session operation reverts with. */
export const sessionKeyValidatorErrorsAbi = [
  {
    "type": "error",
    "name": "AccountMismatch",
    "inputs": [
      {
        "name": "signedAccount",
        "type": "address"
      },
      {
        "name": "sender",
        "type": "address"
      },
      {
        "name": "caller",
        "type": "address"
      }
    ]
  },
  {
    "type": "error",
    "name": "ConflictingPermission",
    "inputs": [
      {
        "name": "target",
        "type": "address"
      }
    ]
  },
  {
    "type": "error",
    "name": "DuplicateSelector",
    "inputs": [
      {
        "name": "target",
        "type": "address"
      },
      {
        "name": "selector",
        "type": "bytes4"
      }
    ]
  },
  {
    "type": "error",
    "name": "DuplicateTarget",
    "inputs": [
      {
        "name": "target",
        "type": "address"
      }
    ]
  },
  {
    "type": "error",
    "name": "ERC7579DecodingError",
    "inputs": []
  },
  {
    "type": "error",
    "name": "ForbiddenTarget",
    "inputs": [
      {
        "name": "target",
        "type": "address"
      }
    ]
  },
  {
    "type": "error",
    "name": "GasBudgetExceeded",
    "inputs": [
      {
        "name": "maxCost",
        "type": "uint256"
      },
      {
        "name": "remaining",
        "type": "uint256"
      }
    ]
  },
  {
    "type": "error",
    "name": "InvalidPeriod",
    "inputs": [
      {
        "name": "period",
        "type": "uint32"
      },
      {
        "name": "periodCap",
        "type": "uint128"
      }
    ]
  },
  {
    "type": "error",
    "name": "InvalidSessionKey",
    "inputs": []
  },
  {
    "type": "error",
    "name": "InvalidSignatureLength",
    "inputs": [
      {
        "name": "length",
        "type": "uint256"
      }
    ]
  },
  {
    "type": "error",
    "name": "InvalidSignatureMarker",
    "inputs": [
      {
        "name": "marker",
        "type": "bytes1"
      }
    ]
  },
  {
    "type": "error",
    "name": "InvalidValidityWindow",
    "inputs": [
      {
        "name": "validAfter",
        "type": "uint48"
      },
      {
        "name": "validUntil",
        "type": "uint48"
      }
    ]
  },
  {
    "type": "error",
    "name": "LanesExhausted",
    "inputs": [
      {
        "name": "account",
        "type": "address"
      }
    ]
  },
  {
    "type": "error",
    "name": "LengthMismatch",
    "inputs": [
      {
        "name": "targets",
        "type": "uint256"
      },
      {
        "name": "selectors",
        "type": "uint256"
      }
    ]
  },
  {
    "type": "error",
    "name": "MalformedExecution",
    "inputs": []
  },
  {
    "type": "error",
    "name": "MalformedTokenCall",
    "inputs": [
      {
        "name": "token",
        "type": "address"
      },
      {
        "name": "selector",
        "type": "bytes4"
      }
    ]
  },
  {
    "type": "error",
    "name": "ModuleAlreadyInstalled",
    "inputs": [
      {
        "name": "account",
        "type": "address"
      }
    ]
  },
  {
    "type": "error",
    "name": "ModuleNotInstalled",
    "inputs": [
      {
        "name": "account",
        "type": "address"
      }
    ]
  },
  {
    "type": "error",
    "name": "NonceLaneNotAllowed",
    "inputs": [
      {
        "name": "nonceKey",
        "type": "uint192"
      },
      {
        "name": "expected",
        "type": "uint192"
      }
    ]
  },
  {
    "type": "error",
    "name": "NotAContract",
    "inputs": [
      {
        "name": "target",
        "type": "address"
      }
    ]
  },
  {
    "type": "error",
    "name": "NotAuthorizedToRevoke",
    "inputs": [
      {
        "name": "caller",
        "type": "address"
      }
    ]
  },
  {
    "type": "error",
    "name": "PaymasterNotAllowed",
    "inputs": [
      {
        "name": "paymaster",
        "type": "address"
      }
    ]
  },
  {
    "type": "error",
    "name": "PeriodCapExceeded",
    "inputs": [
      {
        "name": "periodIndex",
        "type": "uint256"
      },
      {
        "name": "requested",
        "type": "uint256"
      },
      {
        "name": "remaining",
        "type": "uint256"
      }
    ]
  },
  {
    "type": "error",
    "name": "PeriodOutsideWindow",
    "inputs": [
      {
        "name": "periodIndex",
        "type": "uint256"
      }
    ]
  },
  {
    "type": "error",
    "name": "SelectorNotAllowed",
    "inputs": [
      {
        "name": "target",
        "type": "address"
      },
      {
        "name": "selector",
        "type": "bytes4"
      }
    ]
  },
  {
    "type": "error",
    "name": "SessionIsRevoked",
    "inputs": [
      {
        "name": "account",
        "type": "address"
      },
      {
        "name": "key",
        "type": "address"
      }
    ]
  },
  {
    "type": "error",
    "name": "SessionUninstalled",
    "inputs": [
      {
        "name": "account",
        "type": "address"
      },
      {
        "name": "key",
        "type": "address"
      }
    ]
  },
  {
    "type": "error",
    "name": "SpendCapExceeded",
    "inputs": [
      {
        "name": "requested",
        "type": "uint256"
      },
      {
        "name": "remaining",
        "type": "uint256"
      }
    ]
  },
  {
    "type": "error",
    "name": "TargetNotAllowed",
    "inputs": [
      {
        "name": "target",
        "type": "address"
      }
    ]
  },
  {
    "type": "error",
    "name": "TokenCapExceeded",
    "inputs": [
      {
        "name": "token",
        "type": "address"
      },
      {
        "name": "requested",
        "type": "uint256"
      },
      {
        "name": "remaining",
        "type": "uint256"
      }
    ]
  },
  {
    "type": "error",
    "name": "UnknownSession",
    "inputs": [
      {
        "name": "account",
        "type": "address"
      },
      {
        "name": "key",
        "type": "address"
      }
    ]
  },
  {
    "type": "error",
    "name": "UnsupportedCall",
    "inputs": [
      {
        "name": "selector",
        "type": "bytes4"
      }
    ]
  },
  {
    "type": "error",
    "name": "UnsupportedExecutionMode",
    "inputs": [
      {
        "name": "mode",
        "type": "bytes32"
      }
    ]
  },
  {
    "type": "error",
    "name": "UsageLimitReached",
    "inputs": [
      {
        "name": "maxOps",
        "type": "uint32"
      }
    ]
  },
  {
    "type": "error",
    "name": "ZeroTokenCap",
    "inputs": [
      {
        "name": "token",
        "type": "address"
      }
    ]
  }
] as const
