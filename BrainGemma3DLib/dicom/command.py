"""``braingemma3d dicom``, ``send`` and ``fetch``: results into DICOM, to a PACS, and studies from one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..app.arguments import Command, out_folder
from ..io.errors import InputError
from . import require_dicom_packages


def _dicom_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("report", type=Path, help="report folder (report.json, report.pdf, attribution)")
    p.add_argument("--out", required=True, type=out_folder, help="new or empty folder for the DICOM objects")
    p.add_argument("--signed", type=Path, help="the signed PDF of this report: a COMPLETE, VERIFIED SR")
    p.add_argument("--trust", type=Path, action="append", default=[], help="trusted signer certificate")
    p.add_argument("--source", type=Path, help="the source DICOM series folder, if it moved since the report")
    p.add_argument(
        "--new-study",
        action="store_true",
        help="for a report of a non-DICOM input: make a new study (the input as a new MR series) from the "
        "patient fields given here; nothing is invented",
    )
    p.add_argument("--patient-name", default="", help="with --new-study: the patient's name (Last^First)")
    p.add_argument("--patient-id", default="", help="with --new-study: the patient's ID")
    p.add_argument("--birth-date", default="", help="with --new-study: YYYYMMDD")
    p.add_argument("--sex", default="", choices=["", "F", "M", "O"], help="with --new-study")
    p.add_argument("--study-description", default="", help="with --new-study")
    p.add_argument("--accession", default="", help="with --new-study: accession number")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")


def _run_dicom(args: argparse.Namespace) -> int:
    require_dicom_packages()
    from .export import export_report, read_report

    source = args.source
    if args.new_study:
        from .newstudy import IDENTITY_TO_DICOM, new_study_series, study_fields

        report = read_report(args.report)
        if report.input.get("dicom_sop_instance_uids"):
            raise InputError(
                "the report was made from a DICOM series: its own study is used (drop --new-study)"
            )
        try:
            fields = study_fields({key: getattr(args, key) for key in IDENTITY_TO_DICOM})
        except InputError:
            raise InputError(
                "--new-study needs at least --patient-name and --patient-id (nothing is invented)"
            ) from None
        index = export_report(
            args.report,
            args.out,
            signed=args.signed,
            trust=args.trust or None,
            overwrite=args.overwrite,
            new_study=lambda stage: new_study_series(report, fields, stage),
        )
    else:
        index = export_report(
            args.report, args.out, signed=args.signed, source=source, trust=args.trust or None,
            overwrite=args.overwrite,
        )  # fmt: skip
    for entry in index["objects"]:
        print(f"{entry['modality']:>4}: {args.out / entry['file']}  ({entry['sop_instance_uid']})")
    for note in index.get("notes", []):
        print(f"note: {note}")
    status = (
        "COMPLETE / VERIFIED (signed)" if index["status"] == "verified" else "PARTIAL / UNVERIFIED (AI draft)"
    )
    print(f"study {index['study_instance_uid']}; report status {status}")
    return 0


def _peer_arguments(p: argparse.ArgumentParser, flag: str, what: str) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(flag, dest="peer", metavar="AET@HOST:PORT", help=f"{what} over DIMSE")
    where.add_argument(
        "--dicomweb", metavar="URL", help=f"{what} over DICOMweb (e.g. http://pacs:8042/dicom-web)"
    )
    p.add_argument("--aet", default="BRAINGEMMA3D", help="our AE title (default BRAINGEMMA3D)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the PACS (default 30)")


def _send_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", type=Path, help="folder of DICOM objects (what `braingemma3d dicom` wrote)")
    _peer_arguments(p, "--to", "send with C-STORE to this PACS; or --dicomweb URL: STOW-RS")


def _progress(label: str):
    """Progress on one updated line on a terminal; in a log, one line at the end."""
    live = sys.stderr.isatty()

    def show(done: int, total: int) -> None:
        if live:
            print(f"\r{label} {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)

    return show


def _run_send(args: argparse.Namespace) -> int:
    require_dicom_packages(network=True)
    from .network import dicom_files, parse_peer, send_dicomweb, send_dimse

    peer = parse_peer(args.peer) if args.peer else None  # a mistyped address is said before any reading
    files = dicom_files(args.folder)
    if peer is not None:
        stored = send_dimse(files, peer, aet=args.aet, timeout=args.timeout, progress=_progress("sent"))
        print(f"stored {len(stored)} objects on {peer}")
    else:
        stored = send_dicomweb(files, args.dicomweb, timeout=args.timeout)
        print(f"stored {len(stored)} objects on {args.dicomweb}")
    return 0


def _fetch_arguments(p: argparse.ArgumentParser) -> None:
    _peer_arguments(p, "--from", "retrieve with C-GET from this PACS; or --dicomweb URL: WADO-RS")
    p.add_argument("--study", required=True, help="Study Instance UID to retrieve")
    p.add_argument("--out", required=True, type=out_folder, help="new or empty folder for the study's files")


def _run_fetch(args: argparse.Namespace) -> int:
    require_dicom_packages(network=True)
    from .network import fetch_dicomweb, fetch_dimse, parse_peer

    if args.peer:
        peer = parse_peer(args.peer)
        files = fetch_dimse(peer, args.study, args.out, aet=args.aet, timeout=args.timeout,
                            progress=_progress("received"))  # fmt: skip
    else:
        files = fetch_dicomweb(args.dicomweb, args.study, args.out, timeout=args.timeout)
    print(f"retrieved {len(files)} instances of study {args.study} into {args.out}")
    print(f"report it: braingemma3d report {args.out} --out REPORT_DIR")
    return 0


COMMANDS = [
    Command(
        "dicom",
        "write a report as DICOM objects (SR, SEG, Encapsulated PDF) in its study",
        _dicom_arguments,
        _run_dicom,
    ),
    Command("send", "send DICOM objects to a PACS (C-STORE or DICOMweb STOW-RS)", _send_arguments, _run_send),
    Command(
        "fetch", "retrieve a study from a PACS (C-GET or DICOMweb WADO-RS)", _fetch_arguments, _run_fetch
    ),
]
