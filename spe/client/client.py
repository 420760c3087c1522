"""`Client`: the hub's API for a researcher in a notebook, answers as DataFrames.

    from spe.client import Client
    hub = Client()                      # SPE_HUB_URL and SPE_TOKEN, as the CLI reads them
    hub.search("glioma", modality=["MR"])
    hub.query({"where": {"type": "imaging", "modality": ["MR"]}})

`client.api` gives the same calls' JSON (what the CLI prints from)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spe.client.api import HubApi, validated_query
from spe.client.errors import InvalidInput
from spe.client.transport import Hub, resolve_hub, resolve_token, tls_verify

if TYPE_CHECKING:
    import pandas as pd

#: What `search` fetches per page (the API's most).
_PAGE = 100
#: The most hits `search` collects over its pages.
_MOST_HITS = 10_000

STATISTICS = {"mean", "quantiles", "histogram", "table", "correlation", "linear",
              "logistic", "survival"}


class Client:
    """One hub, one user. `hub`: the central service's URL (default SPE_HUB_URL, else
    SPE_OIDC_ISSUER); `token`: a bearer token (default SPE_TOKEN; the catalogue needs none,
    every other call does: `NotConfigured` without one); `ca_bundle`: the PEM
    CA bundle that signed the hub's certificate (default SSL_CERT_FILE, else the system's).
    Every failure is a `spe.client.ClientError`."""

    def __init__(self, hub: str | None = None, token: str | None = None, *,
                 timeout: float = 60.0, ca_bundle: str | os.PathLike | None = None) -> None:
        self.hub = resolve_hub(hub)
        self.api = HubApi(Hub(self.hub, resolve_token(token, required=False),
                              timeout=timeout, verify=tls_verify(ca_bundle)))

    def __repr__(self) -> str:
        return f"Client(hub={self.hub!r})"

    # ---- catalogue ---------------------------------------------------------------------

    def datasets(self) -> pd.DataFrame:
        """The whole catalogue, one row per dataset (indexed by identifier)."""
        from spe.client.frames import datasets_frame

        return datasets_frame(self.api.catalogue())

    def dataset(self, identifier: str) -> dict:
        """One dataset's full description."""
        return self.api.dataset(identifier)

    def search(self, q: str = "", **filters: Any) -> pd.DataFrame:
        """Catalogue search: free text `q` and facet filters as the API takes them
        (`modality=["MR"]`, `institution=...`, `health_category`, `body_part`,
        `access_rights`, `age_band`, `condition`, `age_min`, `age_max`, `sort`). Every
        page is fetched; the facets' counts are in `attrs["facets"]`."""
        from spe.client.frames import datasets_frame

        for name in ("page", "size"):
            if name in filters:
                raise InvalidInput(f"search fetches every page: leave out {name}=")
        hits: list[dict] = []
        page, answer = 1, {}
        while True:
            answer = self.api.catalogue_search({"q": q, **filters, "page": page,
                                                "size": _PAGE})
            hits += answer["results"]
            if page >= answer["pages"] or len(hits) >= _MOST_HITS:
                break
            page += 1
        df = datasets_frame(hits)
        df.attrs.update(total=answer.get("total", len(hits)), facets=answer.get("facets"))
        return df

    # ---- federated queries and statistics ---------------------------------------------

    def query(self, query: dict, *, kind: str | None = None, by: list[str] | None = None,
              permit: str | None = None, timeout: float | None = None) -> pd.DataFrame:
        """A federated query (`{"where": ..., "answer": ...}`, or just the `where` tree):
        counts per node and for all sites (boolean, count, stratified by `by`), or a
        pooled statistic (answer kinds mean, quantiles, ...: see `statistic`). `permit`
        asks in the permit tier. The hub's JSON is in `attrs["answer"]`."""
        from spe.client.frames import count_frame, statistic_frame

        if isinstance(query, dict) and "where" not in query and "type" in query:
            query = {"where": query}
        body = validated_query(query, kind, by)
        answer = self.api.query(body, permit=permit, timeout=timeout)
        if answer["kind"] in STATISTICS:
            return statistic_frame(answer)
        return count_frame(answer)

    def statistic(self, kind: str, where: dict | None = None, *, permit: str | None = None,
                  timeout: float | None = None, **answer: Any) -> pd.DataFrame:
        """A pooled statistic over the cohort `where` (default: every patient): e.g.
        `statistic("mean", where, variable={"type": "age"})`. The table of its kind; the
        nodes in `attrs["nodes"]`, the notes in `attrs["notes"]`."""
        if kind not in STATISTICS:
            raise InvalidInput(f"{kind!r} is not a statistic: one of "
                               + ", ".join(sorted(STATISTICS)))
        return self.query({"where": where or {"type": "patient"},
                           "answer": {"kind": kind, **answer}}, permit=permit,
                          timeout=timeout)

    # ---- permits -----------------------------------------------------------------------

    def permits(self, *, mine: bool = False, status: list[str] | None = None
                ) -> pd.DataFrame:
        """The permits you may read (`mine`: only those naming you), one row each."""
        from spe.client.frames import permits_frame

        return permits_frame(self.api.permits(status, mine))

    def permit(self, pid: str) -> dict:
        """One application or permit: fields, status, reviews, history."""
        return self.api.permit(pid)

    def apply(self, application: dict, *, submit: bool = False) -> dict:
        """Save an application (as `spe permit template` describes it) as a draft; with
        `submit`, submit it too. The permit as the hub has it (`["id"]`)."""
        return self.api.apply(application, submit=submit)

    def submit_application(self, pid: str) -> dict:
        """Submit a draft (or a revised application) to the holding institutions."""
        return self.api.submit_permit(pid)

    # ---- jobs --------------------------------------------------------------------------

    def submit(self, code: str | os.PathLike, *, permit: str, nodes: list[str] | None = None,
               limits: dict[str, Any] | None = None, entry: str = "main.py",
               environment: str | None = None) -> str:
        """Send a job under `permit`: `code` is a folder (with `entry` in it), a script
        file, or Python source. `limits`: wall_seconds, cpu_seconds, memory_mb, processes,
        output_mb, scratch_mb; `environment`: the analysis environment it runs in (the
        hub's default when not given). Returns the job's id."""
        code = code if isinstance(code, str) and "\n" in code else Path(code)
        return self.api.submit_job(code, permit, entry=entry, nodes=nodes, limits=limits,
                                   environment=environment)["id"]

    def submit_crate(self, crate: str | os.PathLike | bytes) -> str:
        """Send a Five Safes RO-Crate request (a zipped BagIt bag: a file, or its bytes;
        `spe.crate.request.write` makes one) as a job. Returns the job's id."""
        data = crate if isinstance(crate, bytes) else Path(crate).read_bytes()
        return self.api.submit_crate(data)["id"]

    def result_crate(self, job_id: str, dest: str | os.PathLike) -> Path:
        """The job's result as a Five Safes RO-Crate (its code, permit, every check and
        review, and its outputs once released), written to the file `dest`."""
        target = Path(dest)
        target.write_bytes(self.api.result_crate(job_id))
        return target

    def job(self, job_id: str) -> dict:
        """The job at every node (`["nodes"]`: state, attempts, the runner's reason)."""
        return self.api.job(job_id)

    def jobs(self) -> pd.DataFrame:
        """Your jobs, newest first: one row per job and institution."""
        from spe.client.frames import jobs_frame

        return jobs_frame(self.api.jobs())

    def wait(self, job_id: str, *, progress: bool = True, timeout: float | None = None
             ) -> dict:
        """The job once every institution's part has ended, drawn as it goes (bars on a
        terminal and in a notebook, a line per change elsewhere). `timeout`: give up
        after that many seconds (`ClientError`). A part held for its institution's code
        review ends the wait too (`ClientError` naming it): approval can take days."""
        from spe.client.errors import ClientError
        from spe.client.progress import follow, follow_drawn, held

        self.api.job(job_id)  # a bad id or a refusal before any bar is drawn

        def poll(t: float | None) -> dict:
            return self.api.job(job_id, timeout=t)

        job, gave_up = (follow_drawn if progress else follow)(poll, limit=timeout)
        if gave_up:
            from spe.client.api import part_line

            raise ClientError(f"gave up waiting after {timeout:g} s: " + "; ".join(
                f"{n['node_id']} {part_line(n)}" for n in job["nodes"]
                if n["state"] != "succeeded"))
        if waiting := held(job):
            raise ClientError(
                f"job {job_id} waits for code review: {'; '.join(waiting)}; wait again "
                "once that institution's approver has approved (Client.job shows it)")
        return job

    def cancel(self, job_id: str) -> dict:
        return self.api.cancel(job_id)

    def outputs(self, job_id: str) -> pd.DataFrame:
        """The job's outputs in the airlock, one row per file (its request's state,
        verdict, whether it may be downloaded)."""
        from spe.client.frames import outputs_frame

        return outputs_frame(self.api.outputs(job_id))

    def download(self, job_id: str, dest: str | os.PathLike = ".", *,
                 nodes: list[str] | None = None) -> list[Path]:
        """The job's released files into `dest/<site>/<file>`, checksums checked; the
        paths written. `ClientError` when nothing is released yet."""
        found = self.api.outputs(job_id)
        return [path for path, _, _ in self.api.download_released(
            found, f"job {job_id}", Path(dest), nodes)]
