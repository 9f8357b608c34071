"""Signing the report (PAdES, offline), verifying it, and refusing whatever would make it misleading."""

from __future__ import annotations

import hashlib
import io
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from PIL import Image

from BrainGemma3DLib.cli import main
from BrainGemma3DLib.io.errors import InputError
from BrainGemma3DLib.reporting.pdf import build_pdf, read_bundle
from BrainGemma3DLib.reporting.report import NOTICE, build_report
from BrainGemma3DLib.reporting.signing import make_test_certificate, sign_pdf, verify_pdf

AI_TEXT = (
    "Findings: A mass in the left temporal lobe with surrounding edema.\n"
    "Impression: Left temporal lesion, likely a glioma."
)
EDITED = (
    "Findings: A mass in the left temporal lobe with surrounding edema and mild enhancement.\n"
    "Impression: Left temporal lesion, likely a glioma."
)


def _png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 48), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A draft PDF and a throw-away certificate, shared by the tests (each signs into its own file)."""
    folder = tmp_path_factory.mktemp("signing")
    report = build_report(
        AI_TEXT,
        model={"name": "BrainGemma3D demo", "preset": "demo", "checkpoint_sha256": "ab" * 32},
        input={"paths": ["flair.nii.gz"], "sha256": ["cd" * 32], "shape": [8, 8, 8], "orientation": "RAS"},
        timings={},
    )
    images = {"axial": _png((40, 40, 40)), "coronal": _png((80, 80, 80)), "sagittal": _png((120, 120, 120))}
    draft = build_pdf(report, images, folder / "report.pdf", fields={"patient_id": "P-0001"})
    key, cert = make_test_certificate(folder / "cert", "Dr Jane Roe")
    edited = folder / "edited.txt"
    edited.write_text(EDITED, encoding="utf-8")
    return {"folder": folder, "draft": draft, "key": key, "cert": cert, "edited": edited}


@pytest.fixture(scope="module")
def signed(world):
    """The draft signed once through the CLI with the edited text."""
    out = world["folder"] / "signed.pdf"
    code = main(
        [
            "sign", str(world["draft"]), "--out", str(out), "--signer", "Dr Jane Roe",
            "--key", str(world["key"]), "--cert", str(world["cert"]), "--text", str(world["edited"]),
            "--location", "Radiology",
        ]
    )  # fmt: skip
    assert code == 0
    return out


def _pdf_text(path: Path) -> str:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(path))
    try:
        return "\n".join(pdf[i].get_textpage().get_text_range() for i in range(len(pdf)))
    finally:
        pdf.close()


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _key_usage(*allowed: str) -> dict[str, bool]:
    """KeyUsage keyword arguments with only ``allowed`` switched on."""
    names = (
        "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
        "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
    )  # fmt: skip
    return {name: name in allowed for name in names}


def _cert(folder: Path, name: str, *, key=None, signing: bool = True) -> tuple[Path, Path, object, object]:
    """A self-signed certificate, optionally without any signing key usage (encipherment only)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(timezone.utc)
    usage = _key_usage("digital_signature" if signing else "key_agreement")
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.KeyUsage(**usage), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = folder / f"{name}.key.pem", folder / f"{name}.cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path, key, cert


def test_sign_then_verify_intact_valid_trusted_whole_file(world, signed, capsys):
    capsys.readouterr()
    assert main(["verify", str(signed), "--trust", str(world["cert"])]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    expected = ("intact: yes", "valid: yes", "trusted: yes", "covers-whole-file: yes", "signer: Dr Jane Roe")
    assert all(line in lines for line in expected), out
    result = verify_pdf(signed)  # without a trust anchor: intact and valid, not trusted
    assert result["intact"] and result["valid"] and result["covers_whole_file"] and not result["trusted"]
    assert main(["verify", str(signed)]) == 0
    assert "trusted: no" in capsys.readouterr().out
    other = _cert(world["folder"] / "other", "Someone Else")[1]  # a --trust that is not the signer's
    assert main(["verify", str(signed), "--trust", str(other)]) == 1


def test_signed_pdf_is_final_with_the_edited_text(world, signed):
    text = _pdf_text(signed)
    assert "mild enhancement" in text and "DRAFT" not in text
    assert "reviewed and signed by Dr Jane Roe" in text and NOTICE in text and "P-0001" in text
    report, images = read_bundle(signed)
    assert report.status == "signed" and report.signed["by"] == "Dr Jane Roe"
    assert report.text == EDITED and report.ai_draft_text == AI_TEXT and report.edited
    assert report.entities["findings"]["enhancement"] is True  # re-derived from the edited text
    assert set(images) == {"axial", "coronal", "sagittal"}


def test_audit_record_has_diff_digests_and_time(world, signed):
    audit = json.loads((signed.parent / "signed.audit.json").read_text(encoding="utf-8"))
    assert audit["signer"] == "Dr Jane Roe" and audit["location"] == "Radiology"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", audit["signed_at"])
    assert audit["ai_draft_text"] == AI_TEXT and audit["final_text"] == EDITED and audit["edited"]
    assert "-Findings: A mass in the left temporal lobe with surrounding edema." in audit["diff"]
    assert "+Findings: A mass in the left temporal lobe with surrounding edema and mild enhancement." in (
        audit["diff"].splitlines()
    )
    assert audit["draft_pdf_sha256"] == hashlib.sha256(world["draft"].read_bytes()).hexdigest()
    assert audit["signed_pdf_sha256"] == hashlib.sha256(signed.read_bytes()).hexdigest()
    assert audit["model"]["checkpoint_sha256"] == "ab" * 32 and audit["input"]["sha256"] == ["cd" * 32]


def test_one_flipped_byte_is_not_intact(world, signed, capsys, tmp_path):
    data = bytearray(signed.read_bytes())
    position = data.index(b"stream", data.index(b"/Length")) + 40  # inside the first page stream
    data[position] ^= 0x01
    tampered = tmp_path / "tampered.pdf"
    tampered.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["verify", str(tampered), "--trust", str(world["cert"])]) == 1
    out = capsys.readouterr().out
    assert "intact: no" in out.splitlines() and "FAILED" in out


def test_content_appended_after_signing_fails(world, signed, capsys, tmp_path):
    appended = tmp_path / "appended.pdf"
    appended.write_bytes(signed.read_bytes() + b"\n% appended after signing\n")
    capsys.readouterr()
    assert main(["verify", str(appended)]) == 1
    out = capsys.readouterr().out
    assert "intact: yes" in out.splitlines() and "covers-whole-file: no" in out.splitlines()


def test_sign_never_overwrites(world, signed, capsys):
    before = signed.read_bytes()
    args = ["sign", str(world["draft"]), "--out", str(signed), "--signer", "X"]
    assert main([*args, "--key", str(world["key"]), "--cert", str(world["cert"])]) == 2
    assert "never overwritten" in _one_line_error(capsys)
    assert signed.read_bytes() == before
    # An audit record in the way also stops signing, before the PDF is written.
    lone = world["folder"] / "lone.pdf"
    (world["folder"] / "lone.audit.json").write_text("{}")
    with pytest.raises(InputError, match="never overwritten"):
        sign_pdf(world["draft"], lone, signer="X", key=world["key"], cert=world["cert"])
    assert not lone.exists()


def test_pkcs12_with_password_file_wrong_password_and_no_password(world, tmp_path, capsys):
    from cryptography.hazmat.primitives.serialization import (
        BestAvailableEncryption,
        load_pem_private_key,
        pkcs12,
    )
    from cryptography.x509 import load_pem_x509_certificate

    key = load_pem_private_key(world["key"].read_bytes(), None)
    cert = load_pem_x509_certificate(world["cert"].read_bytes())
    p12 = tmp_path / "signer.p12"
    secret = BestAvailableEncryption(b"s3cret")
    p12.write_bytes(pkcs12.serialize_key_and_certificates(b"jr", key, cert, None, secret))
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text("s3cret\nignored second line\n")
    bad.write_text("guess\n")
    base = ["sign", str(world["draft"]), "--signer", "Dr Jane Roe", "--p12", str(p12)]

    assert main([*base, "--out", str(tmp_path / "a.pdf"), "--password-file", str(bad)]) == 2
    err = _one_line_error(capsys)
    assert "wrong password" in err and "signer.p12" in err
    assert main([*base, "--out", str(tmp_path / "b.pdf")]) == 2  # stdin is not a terminal under pytest
    assert "--password-file" in _one_line_error(capsys)
    assert not list(tmp_path.glob("*.pdf"))

    assert main([*base, "--out", str(tmp_path / "c.pdf"), "--password-file", str(good)]) == 0
    assert verify_pdf(tmp_path / "c.pdf", [world["cert"]])["trusted"]


def test_credentials_that_cannot_sign_are_refused(world, tmp_path, capsys):
    base = ["sign", str(world["draft"]), "--out", str(tmp_path / "s.pdf"), "--signer", "X"]
    key, cert, _k, _c = _cert(tmp_path / "nosign", "No Signing", signing=False)
    assert main([*base, "--key", str(key), "--cert", str(cert)]) == 2
    assert "key usage does not allow signing" in _one_line_error(capsys)

    other_key = _cert(tmp_path / "other", "Other")[0]
    assert main([*base, "--key", str(other_key), "--cert", str(world["cert"])]) == 2
    assert "does not belong to the certificate" in _one_line_error(capsys)

    assert main([*base, "--key", str(tmp_path / "missing.pem"), "--cert", str(world["cert"])]) == 2
    assert "not found" in _one_line_error(capsys)
    assert main([*base, "--key", str(world["key"])]) == 2  # --cert missing
    assert not (tmp_path / "s.pdf").exists()


def test_bad_pdfs_are_refused_with_one_line(world, signed, tmp_path, capsys):
    junk = tmp_path / "junk.pdf"
    junk.write_bytes(b"%PDF-1.4\n" + b"\x00garbage" * 50)
    creds = ["--key", str(world["key"]), "--cert", str(world["cert"])]
    assert main(["sign", str(junk), "--out", str(tmp_path / "o.pdf"), "--signer", "X", *creds]) == 2
    assert "not a BrainGemma3D report PDF or it is corrupted" in _one_line_error(capsys)
    assert main(["sign", str(signed), "--out", str(tmp_path / "o2.pdf"), "--signer", "X", *creds]) == 2
    assert "already signed" in _one_line_error(capsys)
    assert main(["verify", str(world["draft"])]) == 2
    assert "no digital signature" in _one_line_error(capsys)
    assert main(["verify", str(junk)]) == 2
    assert "junk.pdf" in _one_line_error(capsys)
    assert main(["verify", str(tmp_path / "missing.pdf")]) == 2
    assert "not found" in _one_line_error(capsys)


def test_make_cert_writes_a_signing_certificate_and_refuses_to_overwrite(tmp_path, capsys):
    from cryptography import x509

    assert main(["make-cert", "--out", str(tmp_path), "--name", "Dr Ann Example"]) == 0
    out = capsys.readouterr().out
    assert "NOT for signing real reports" in out
    cert = x509.load_pem_x509_certificate((tmp_path / "dr-ann-example.cert.pem").read_bytes())
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment
    assert timedelta(days=700) < cert.not_valid_after_utc - cert.not_valid_before_utc < timedelta(days=740)
    assert main(["make-cert", "--out", str(tmp_path), "--name", "Dr Ann Example"]) == 2
    assert "refusing to overwrite" in _one_line_error(capsys)


def _hospital_ca(folder: Path, *names: str) -> tuple[Path, list[tuple[Path, Path]]]:
    """A CA certificate and, for each name, a key and a certificate (with the CA in its chain) it issued."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hospital Test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**_key_usage("key_cert_sign", "crl_sign")), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_path = folder / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(pem))
    issued = []
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(
                x509.KeyUsage(**_key_usage("digital_signature", "content_commitment")),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        key_path, cert_path = folder / f"{_slug_name(name)}.key.pem", folder / f"{_slug_name(name)}.cert.pem"
        key_path.write_bytes(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        cert_path.write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
        issued.append((key_path, cert_path))
    return ca_path, issued


def _slug_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _countersign(pdf: bytes, key: Path, cert: Path, name: str) -> bytes:
    """A second signature in a new field, added the way any PDF tool does (an incremental update)."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers

    from BrainGemma3DLib.reporting.signing import _load_pem_pair, _pyhanko_signer

    meta = signers.PdfSignatureMetadata(
        field_name="Countersignature",
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
        name=name,
    )
    signer = signers.PdfSigner(
        meta,
        signer=_pyhanko_signer(_load_pem_pair(key, cert, None)),
        new_field_spec=fields.SigFieldSpec(sig_field_name="Countersignature"),
    )
    return signer.sign_pdf(IncrementalPdfFileWriter(io.BytesIO(pdf))).getvalue()


def _replace_page_text(pdf: bytes, text: bytes) -> bytes:
    """An incremental update that swaps the first page's content for other text: what a forger does."""
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    page = writer.root["/Pages"]["/Kids"][0].get_object()
    page["/Contents"] = writer.add_object(
        generic.StreamObject(stream_data=b"BT 72 700 Td (" + text + b") Tj ET")
    )
    writer.update_container(page)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_changed_then_countersigned_report_fails_and_names_each_signature(world, tmp_path, capsys):
    ca, [(key_a, cert_a), (key_b, cert_b)] = _hospital_ca(
        tmp_path / "pki", "Dr A Radiologist", "Dr B Colleague"
    )
    first = tmp_path / "signed-a.pdf"
    sign_pdf(world["draft"], first, signer="Dr A Radiologist", key=key_a, cert=cert_a)

    forged = tmp_path / "forged.pdf"
    forged.write_bytes(
        _countersign(
            _replace_page_text(first.read_bytes(), b"RIGHT frontal mass"), key_b, cert_b, "Dr B Colleague"
        )
    )
    capsys.readouterr()
    assert main(["verify", str(forged), "--trust", str(ca)]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "changed-after-signing: yes" in lines and "signer: Dr A Radiologist" in lines, out
    assert lines[-1].startswith("FAILED") and "Dr A Radiologist" in lines[-1], out
    sig_lines = [line for line in lines if line.startswith("signature ")]
    assert len(sig_lines) == 2, out
    assert sig_lines[0].startswith("signature 1 of 2: Dr A Radiologist") and "content changed" in sig_lines[0]
    assert (
        sig_lines[1].startswith("signature 2 of 2: Dr B Colleague")
        and "changed after it: nothing" in (sig_lines[1])
    )
    result = verify_pdf(forged, [ca])
    assert result["modified"] and not result["ok"]
    assert [s["modified"] for s in result["signatures"]] == [True, False]
    # Each signature on its own is intact, valid and trusted: only the revision analysis catches this.
    assert all(s["intact"] and s["valid"] and s["trusted"] for s in result["signatures"])

    # A plain countersignature (nothing changed in between) is fine, and both signers are listed.
    cosigned = tmp_path / "cosigned.pdf"
    cosigned.write_bytes(_countersign(first.read_bytes(), key_b, cert_b, "Dr B Colleague"))
    assert main(["verify", str(cosigned), "--trust", str(ca)]) == 0
    out = capsys.readouterr().out
    assert "changed after it: signatures only" in out and "signer: Dr A Radiologist" in out.splitlines()
    assert out.splitlines()[-1].startswith("OK: intact, valid and trusted, signed by Dr A Radiologist")


def test_a_byte_changed_in_the_signature_padding_fails(world, signed, capsys, tmp_path):
    data = bytearray(signed.read_bytes())
    start = data.index(b"/Contents <") + len(b"/Contents <")
    end = data.index(b">", start)
    assert data[end - 1 : end] == b"0"  # the zero padding at the end of the reserved hex string
    data[end - 10] = ord("7")
    tampered = tmp_path / "padding.pdf"
    tampered.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["verify", str(tampered), "--trust", str(world["cert"])]) == 1
    out = capsys.readouterr().out
    assert "intact: no" in out.splitlines() and "reserved space" in out.splitlines()[-1], out


def test_a_long_edited_text_signs_and_a_non_report_sized_one_is_refused(world, tmp_path, capsys):
    line = "The lesion in the left temporal lobe shows surrounding edema and no enhancement.\n"
    long_text = tmp_path / "long.txt"
    long_text.write_text("Findings: " + line * 1800, encoding="utf-8")  # ~150 kB: many pages
    creds = ["--key", str(world["key"]), "--cert", str(world["cert"]), "--signer", "Dr Jane Roe"]
    out = tmp_path / "long.pdf"
    assert main(["sign", str(world["draft"]), "--out", str(out), *creds, "--text", str(long_text)]) == 0
    assert verify_pdf(out)["intact"] and _pdf_text(out).count("surrounding edema") == 1800

    huge = tmp_path / "huge.txt"
    huge.write_text(line * 3000, encoding="utf-8")  # ~250 kB
    refused = tmp_path / "huge.pdf"
    assert main(["sign", str(world["draft"]), "--out", str(refused), *creds, "--text", str(huge)]) == 2
    err = _one_line_error(capsys)
    assert "huge.txt" in err and "at most 200000" in err and not refused.exists()
