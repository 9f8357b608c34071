"""``braingemma3d dicom``, ``send`` and ``fetch``: results into DICOM, to a PACS, and studies from one."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..app.arguments import Command, out_folder
from ..io.errors import InputError


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
    from .export import export_report, read_report

    source = args.source
    if args.new_study:
        from .newstudy import new_study_series

        if not args.patient_name.strip() or not args.patient_id.strip():
            raise InputError(
                "--new-study needs at least --patient-name and --patient-id (nothing is invented)"
            )
        report = read_report(args.report)
        if report.get("input", {}).get("dicom_sop_instance_uids"):
            raise InputError(
                "the report was made from a DICOM series: its own study is used (drop --new-study)"
            )
        fields = {
            "PatientName": args.patient_name.strip(),
            "PatientID": args.patient_id.strip(),
            "PatientBirthDate": args.birth_date.strip(),
            "PatientSex": args.sex,
            "StudyDescription": args.study_description.strip(),
            "AccessionNumber": args.accession.strip(),
        }
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
    status = (
        "COMPLETE / VERIFIED (signed)" if index["status"] == "verified" else "PARTIAL / UNVERIFIED (AI draft)"
    )
    print(f"study {index['study_instance_uid']}; report status {status}")
    return 0


COMMANDS = [
    Command(
        "dicom",
        "write a report as DICOM objects (SR, SEG, Encapsulated PDF) in its study",
        _dicom_arguments,
        _run_dicom,
    ),
]
