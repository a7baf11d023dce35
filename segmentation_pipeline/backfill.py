"""`make backfill FROM=YYYY-MM-DD TO=YYYY-MM-DD`: a backfill of the graph over a date range, from the command line.

It asks the running Dagster webserver (`make dev`) for the same asset backfill
the UI launches (Materialize all, a partition range): raw_events, id_history,
merge_map and profiles in one run for the range, clusters in one run that makes
the days in date order, then one run per day for the stages after it. The
daemon of `make dev` carries it out; this command follows it until it is done.
(`dagster job backfill` would instead launch one whole-graph run per day at
once, in no order, which segment IDs that follow the previous day cannot have.)
"""

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date

import requests
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError
from gql.transport.exceptions import TransportConnectionFailed

LAUNCH_BACKFILL = """
mutation LaunchBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionKeysNotFoundError { message partitionKeys }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message }
  }
}
"""

ASSET_KEYS = """
query AssetKeys {
  assetNodes { assetKey { path } isPartitioned isExecutable }
}
"""

BACKFILL_STATUS = """
query BackfillStatus($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      id
      status
      error { message }
      assetBackfillData {
        assetBackfillStatuses {
          __typename
          ... on AssetPartitionsStatusCounts {
            assetKey { path }
            numPartitionsTargeted
            numPartitionsInProgress
            numPartitionsMaterialized
            numPartitionsFailed
          }
        }
      }
    }
    ... on BackfillNotFoundError { message }
    ... on PythonError { message }
  }
}
"""

#: Backfill states after which nothing more happens.
FINISHED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


class BackfillError(RuntimeError):
    """The webserver refused the backfill or could not report on it."""


def partitioned_assets(client: DagsterGraphQLClient) -> list[str]:
    """Every partitioned asset of the code location: the whole graph."""
    nodes = client._execute(ASSET_KEYS)["assetNodes"]
    return sorted(
        "/".join(node["assetKey"]["path"]) for node in nodes if node["isPartitioned"] and node["isExecutable"]
    )


def launch_backfill(
    client: DagsterGraphQLClient, first: date, last: date, assets: Sequence[str], title: str = ""
) -> str:
    """An asset backfill of `assets` over first..last (inclusive); returns its ID."""
    params = {
        "partitionsByAssets": [
            {
                "assetKey": {"path": asset.split("/")},
                "partitions": {"range": {"start": first.isoformat(), "end": last.isoformat()}},
            }
            for asset in assets
        ],
        "title": title or f"{first} .. {last}",
        "tags": [{"key": "segmentation/launched_by", "value": "make backfill"}],
    }
    answer = client._execute(LAUNCH_BACKFILL, {"backfillParams": params})["launchPartitionBackfill"]
    if answer["__typename"] != "LaunchBackfillSuccess":
        raise BackfillError(f"the backfill of {first} .. {last} was refused: {answer['__typename']}: {answer}")
    return answer["backfillId"]


def backfill_status(client: DagsterGraphQLClient, backfill_id: str) -> dict:
    answer = client._execute(BACKFILL_STATUS, {"backfillId": backfill_id})["partitionBackfillOrError"]
    if answer["__typename"] != "PartitionBackfill":
        raise BackfillError(f"backfill {backfill_id}: {answer['__typename']}: {answer.get('message')}")
    return answer


def progress_line(status: dict) -> str:
    """`status: materialized/targeted partitions, failed` over every asset of the backfill."""
    counts = [
        item
        for item in (status.get("assetBackfillData") or {}).get("assetBackfillStatuses", [])
        if item["__typename"] == "AssetPartitionsStatusCounts"
    ]
    done = sum(item["numPartitionsMaterialized"] for item in counts)
    targeted = sum(item["numPartitionsTargeted"] for item in counts)
    failed = sum(item["numPartitionsFailed"] for item in counts)
    return f"{status['status']}: {done}/{targeted} asset partitions materialized, {failed} failed"


def wait_for_backfill(
    client: DagsterGraphQLClient,
    backfill_id: str,
    timeout_seconds: float,
    poll_seconds: float = 2.0,
    report: Callable[[str], None] = lambda line: None,
) -> dict:
    """Poll until the backfill is finished; its last status. Raises BackfillError on timeout."""
    deadline = time.monotonic() + timeout_seconds
    last_line = ""
    while True:
        status = backfill_status(client, backfill_id)
        line = progress_line(status)
        if line != last_line:
            report(line)
            last_line = line
        if status["status"] in FINISHED:
            return status
        if time.monotonic() > deadline:
            raise BackfillError(f"backfill {backfill_id} not finished after {timeout_seconds:.0f} s: {line}")
        time.sleep(poll_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="first", type=date.fromisoformat, required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--to", dest="last", type=date.fromisoformat, required=True, help="last day, YYYY-MM-DD")
    parser.add_argument(
        "--assets", nargs="+", default=None, help="asset keys to backfill (default: every asset of the graph)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="the Dagster webserver (make dev)")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--no-wait", action="store_true", help="launch and return; follow it in the UI")
    parser.add_argument("--timeout", type=float, default=24 * 3600, help="seconds to wait for the backfill")
    args = parser.parse_args(argv)
    if args.last < args.first:
        parser.error(f"--to {args.last} lies before --from {args.first}")
    client = DagsterGraphQLClient(args.host, port_number=args.port)
    try:
        assets = args.assets or partitioned_assets(client)
        backfill_id = launch_backfill(client, args.first, args.last, assets)
    except (DagsterGraphQLClientError, BackfillError) as exc:
        print(_failure(exc, args.host, args.port, "launching the backfill"), file=sys.stderr)
        return 2 if _no_server(exc) else 1
    url = f"http://{args.host}:{args.port}/runs/b/{backfill_id}"
    print(f"Backfill {backfill_id} of {len(assets)} assets, {args.first} .. {args.last}: {url}", flush=True)
    if args.no_wait:
        return 0
    try:
        status = wait_for_backfill(
            client, backfill_id, args.timeout, report=lambda line: print(f"  {line}", flush=True)
        )
    except (DagsterGraphQLClientError, BackfillError) as exc:
        # The backfill goes on in the daemon; only following it stopped.
        print(_failure(exc, args.host, args.port, f"following backfill {backfill_id} ({url})"), file=sys.stderr)
        return 1
    if status["status"] != "COMPLETED_SUCCESS":
        message = (status.get("error") or {}).get("message", "")
        print(f"Backfill {backfill_id} ended {status['status']} {message}".rstrip(), file=sys.stderr)
        return 1
    return 0


def _no_server(exc: Exception) -> bool:
    """Whether nothing answered at all (as opposed to a webserver that answered with an error)."""
    return isinstance(exc, DagsterGraphQLClientError) and isinstance(
        exc.__cause__, (requests.ConnectionError, TransportConnectionFailed)
    )


def _failure(exc: Exception, host: str, port: int, doing: str) -> str:
    if _no_server(exc):
        return f"No Dagster webserver answered at {host}:{port} while {doing}; start one with `make dev`."
    reason = f"{exc.__cause__}" if exc.__cause__ else str(exc).splitlines()[0]
    return f"The Dagster webserver at {host}:{port} failed while {doing}: {reason}"


if __name__ == "__main__":
    sys.exit(main())
