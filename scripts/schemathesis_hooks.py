"""Hooks for scripts/check-schemathesis (loaded through SCHEMATHESIS_HOOKS).

The run authenticates with one admin token. Revoking that token would turn every later request
into a 401 and the rest of the run into a test of nothing, so a generated
`DELETE /tokens/{id}` aimed at the run's own token id is sent for an id that does not exist
instead (it is answered 404, which the document declares). Every other token operation,
including revoking tokens the run created itself, goes through unchanged.
"""

import os

import schemathesis

RUN_TOKEN_ID = os.environ["MACPOOL_RUN_TOKEN_ID"]
SPARED = 0


@schemathesis.hook
def before_call(context, case, kwargs):
    global SPARED
    params = case.path_parameters or {}
    if case.method.upper() == "DELETE" and params.get("id") == RUN_TOKEN_ID:
        params["id"] = RUN_TOKEN_ID + "-spared"
        SPARED += 1
        with open(os.environ["MACPOOL_SPARED_LOG"], "a") as log:
            log.write(f"{case.path}\n")
