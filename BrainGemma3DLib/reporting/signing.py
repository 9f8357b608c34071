"""Digital signing of the final report (PAdES baseline B) and its verification, offline.

Signing turns the radiologist's review into something others can check: the final PDF is rebuilt from the
draft's embedded bundle (no DRAFT watermark, the edited text if any, status "signed", signer and time on the
page), signed with pyHanko in the box the draft kept free, and an audit record beside it keeps the AI's draft,
the signed text and their diff, with the SHA-256 of both PDFs, the model checkpoint and the inputs.  Nothing
is overwritten: a signed report is evidence, so a second signature goes to a new file.

No network is ever used: PAdES baseline B needs no time-stamp authority, and verification builds its trust
path only from the certificates given (``allow_fetching=False``, no operating-system trust list).

:func:`make_test_certificate` makes a throw-away self-signed certificate for demos and tests.  It proves
nothing about anyone's identity and must never be used to sign real reports; use a certificate issued to the
radiologist (PKCS#12 from the hospital's PKI).
"""

from __future__ import annotations

import difflib
import getpass
import io
import json
import logging
import os
import re
import sys
import tempfile
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..io.atomic import atomic_path
from ..io.errors import InputError
from ..io.stamps import sha256_bytes as _sha256
from ..io.stamps import utc_iso as _utc
from .pdf import SIGNATURE_BOX, SIGNATURE_FIELD, build_pdf, load_bundle

__all__ = ["make_test_certificate", "sign_pdf", "verify_pdf", "audit_path", "read_password_file"]

log = logging.getLogger(__name__)

DEFAULT_REASON = "Radiology report approved"
#: The longest report text that can be signed (characters): a long report is a few thousand; anything near
#: this is not a report (and would only make a PDF nobody reads).
MAX_TEXT_CHARS = 200_000
AUDIT_FORMAT = "braingemma3d-signing-audit"
TEST_CERT_NOTICE = "BrainGemma3D throw-away test certificate - NOT FOR CLINICAL USE"


def audit_path(signed_pdf: str | os.PathLike) -> Path:
    """Where the audit record of ``signed_pdf`` goes: ``<stem>.audit.json`` beside it."""
    p = Path(signed_pdf)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(f"{stem}.audit.json")


def read_password_file(path: str | os.PathLike) -> str:
    """The first line of ``path``, stripped: passwords never go on the command line (``ps`` shows it)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError("password file not found", p) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"cannot read the password file ({getattr(exc, 'strerror', None) or exc})", p
        ) from None
    return lines[0].strip() if lines else ""


# --- test certificate ---------------------------------------------------------------------------------------


def _slug(name: str) -> str:
    slug = re.sub(
        r"[^A-Za-z0-9]+", "-", unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    )
    return slug.strip("-").lower() or "signer"


def make_test_certificate(folder: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """Write a throw-away self-signed RSA key and certificate (PEM) for ``name``; return ``(key, cert)``.

    FOR DEMOS AND TESTS ONLY: anyone can make one with any name, so it proves no identity; the key is stored
    unencrypted.  The certificate allows digitalSignature and nonRepudiation (what document signing needs),
    is valid for two years, and its organisation says it is not for clinical use.  Existing files are never
    overwritten.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    if not str(name).strip():
        raise InputError("--name must not be empty")
    out = Path(folder)
    key_path, cert_path = out / f"{_slug(name)}.key.pem", out / f"{_slug(name)}.cert.pem"
    for p in (key_path, cert_path):
        if p.exists():
            raise InputError("exists; refusing to overwrite a key or certificate", p)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, str(name).strip()),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, TEST_CERT_NOTICE),
        ]
    )
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=730))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,  # nonRepudiation
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with atomic_path(key_path) as tmp:
        tmp.write_bytes(key_pem)
        os.chmod(tmp, 0o600)
    with atomic_path(cert_path) as tmp:
        tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


# --- credentials --------------------------------------------------------------------------------------------


@dataclass
class _Credentials:
    key: object  # a cryptography private key
    cert: object  # cryptography x509.Certificate
    chain: list
    cert_source: Path
    key_source: Path


def _read(path: str | os.PathLike, what: str) -> bytes:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found", p)
    if not p.is_file():
        raise InputError(f"{what} is not a file", p)
    try:
        return p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the {what} ({exc.strerror or exc})", p) from None


def _prompt(path: Path, what: str) -> bytes:
    """Ask for a password on the terminal; without one (a script, a pipe) say how to give it instead."""
    if sys.stdin is not None and sys.stdin.isatty():
        return getpass.getpass(f"Password for {path.name}: ").encode("utf-8")
    raise InputError(f"the {what} is password-protected; give the password with --password-file", path)


def _as_bytes(password: str | bytes | None) -> bytes | None:
    if password is None:
        return None
    return password if isinstance(password, bytes) else password.encode("utf-8")


def _load_p12(path: str | os.PathLike, password: str | bytes | None) -> _Credentials:
    from asn1crypto import pkcs12 as asn1_pkcs12
    from cryptography.hazmat.primitives.serialization import pkcs12

    p = Path(path)
    data = _read(p, "PKCS#12 file")
    try:
        asn1_pkcs12.Pfx.load(data).native  # noqa: B018 (parse everything: a damaged file fails here)
    except Exception:
        raise InputError("not a PKCS#12 (.p12/.pfx) file or it is corrupted", p) from None
    secret = _as_bytes(password)
    attempts = [secret, None] if secret is not None else [None, b""]  # None: an unprotected file
    for attempt in attempts:
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(data, attempt)
            break
        except ValueError:
            continue
    else:
        if secret is not None:
            raise InputError("wrong password for the PKCS#12 file", p)
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(data, _prompt(p, "PKCS#12 file"))
        except ValueError:
            raise InputError("wrong password for the PKCS#12 file", p) from None
    if key is None:
        raise InputError("the PKCS#12 file holds no private key", p)
    if cert is None:
        raise InputError("the PKCS#12 file holds no certificate", p)
    return _Credentials(key, cert, list(extra or []), p, p)


def _load_pem_pair(
    key_path: str | os.PathLike, cert_path: str | os.PathLike, password: str | bytes | None
) -> _Credentials:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_der_private_key, load_pem_private_key

    kp, cp = Path(key_path), Path(cert_path)
    key_data, cert_data = _read(kp, "private key file"), _read(cp, "certificate file")
    loader = load_pem_private_key if b"-----BEGIN" in key_data else load_der_private_key
    secret = _as_bytes(password)
    try:
        key = loader(key_data, secret)
    except TypeError:  # encrypted key and no password, or a password for an unencrypted key
        if secret is not None:
            key = loader(key_data, None)
        else:
            try:
                key = loader(key_data, _prompt(kp, "private key"))
            except ValueError:
                raise InputError("wrong password for the private key", kp) from None
    except ValueError:
        problem = (
            "wrong password for the private key"
            if secret is not None and b"ENCRYPTED" in key_data
            else ("not a private key (PEM or DER) or it is corrupted")
        )
        raise InputError(problem, kp) from None
    except Exception:
        raise InputError("not a private key (PEM or DER) or it is corrupted", kp) from None
    try:
        if b"-----BEGIN" in cert_data:
            certs = x509.load_pem_x509_certificates(cert_data)
        else:
            certs = [x509.load_der_x509_certificate(cert_data)]
    except Exception:
        raise InputError("not an X.509 certificate (PEM or DER) or it is corrupted", cp) from None
    return _Credentials(key, certs[0], certs[1:], cp, kp)


def _check(creds: _Credentials, now: datetime) -> None:
    """Refuse credentials that would give an invalid or misleading signature, before anything is written."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if creds.key.public_key().public_bytes(*spki) != creds.cert.public_key().public_bytes(*spki):
        raise InputError(
            f"the private key does not belong to the certificate {creds.cert_source.name}", creds.key_source
        )
    try:
        usage = creds.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None  # RFC 5280: no key-usage extension means no restriction
    if usage is not None and not (usage.digital_signature or usage.content_commitment):
        raise InputError(
            "the certificate's key usage does not allow signing (needs digitalSignature or nonRepudiation)",
            creds.cert_source,
        )
    if now < creds.cert.not_valid_before_utc:
        raise InputError(
            f"the certificate is not valid before {_utc(creds.cert.not_valid_before_utc)}", creds.cert_source
        )
    if now > creds.cert.not_valid_after_utc:
        raise InputError(
            f"the certificate expired on {_utc(creds.cert.not_valid_after_utc)}", creds.cert_source
        )


def _pyhanko_signer(creds: _Credentials):
    from asn1crypto import keys as asn1_keys
    from asn1crypto import x509 as asn1_x509
    from cryptography.hazmat.primitives import serialization
    from pyhanko.sign import signers
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    der = serialization.Encoding.DER
    key_info = asn1_keys.PrivateKeyInfo.load(
        creds.key.private_bytes(der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert = asn1_x509.Certificate.load(creds.cert.public_bytes(der))
    chain = [asn1_x509.Certificate.load(c.public_bytes(der)) for c in creds.chain]
    return signers.SimpleSigner(
        signing_cert=cert,
        signing_key=key_info,
        cert_registry=SimpleCertificateStore.from_certs([cert, *chain]),
    )


def _stamp_safe(text: str) -> str:
    """The stamp uses a standard PDF font (Latin-1); other characters become their closest ASCII."""
    return "".join(
        c if ord(c) < 256 else (unicodedata.normalize("NFKD", c).encode("ascii", "ignore").decode() or "?")
        for c in text
    )


# --- signing ------------------------------------------------------------------------------------------------


def sign_pdf(
    draft_pdf: str | os.PathLike,
    out: str | os.PathLike,
    *,
    signer: str,
    p12: str | os.PathLike | None = None,
    password: str | bytes | None = None,
    key: str | os.PathLike | None = None,
    cert: str | os.PathLike | None = None,
    text: str | None = None,
    reason: str = DEFAULT_REASON,
    location: str | None = None,
) -> dict:
    """Rebuild the final report from ``draft_pdf``, sign it (PAdES B-B, visible) and write ``out`` + audit.

    Credentials: ``p12`` (PKCS#12, with ``password``) or ``key`` + ``cert`` (PEM/DER; ``password`` for an
    encrypted key).  A password that is needed but not given is asked for on the terminal, or refused when
    there is none.  ``text``: the radiologist's edited report text (default: the draft's own).  ``out`` and
    its audit record (:func:`audit_path`) are never overwritten.  Returns a summary dict with the paths,
    signer, signing time and digests.  Raises :class:`InputError` for anything the user can fix.
    """
    out = Path(out)
    audit = audit_path(out)
    if out.exists():
        raise InputError("exists; a signed PDF is never overwritten", out)
    if audit.exists():
        raise InputError("exists; an audit record is never overwritten", audit)
    if not str(signer or "").strip():
        raise InputError('the signer\'s name is empty (give --signer "Name")')
    signer = str(signer).strip()
    if (p12 is None) == (key is None and cert is None):
        raise InputError(
            "give either a PKCS#12 file (--p12) or a private key and certificate (--key, --cert)"
        )
    if p12 is None and (key is None or cert is None):
        raise InputError("--key and --cert go together")
    if text is not None and len(text) > MAX_TEXT_CHARS:
        raise InputError(
            f"the edited text has {len(text)} characters; a report has at most {MAX_TEXT_CHARS} "
            "(is it the right file?)"
        )

    draft_bytes = _read(draft_pdf, "draft PDF")
    bundle = load_bundle(draft_pdf)
    if not bundle.draft or bundle.report.status == "signed":
        raise InputError("already signed; sign the unsigned draft (report.pdf) instead", draft_pdf)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    creds = _load_p12(p12, password) if p12 is not None else _load_pem_pair(key, cert, password)  # type: ignore[arg-type]
    _check(creds, now)

    draft = bundle.report
    ai_text, final_text = draft.draft_text, draft.text if text is None else text
    report = draft.with_text(final_text).signed_by(signer, _utc(now), reason=reason, location=location)

    with tempfile.TemporaryDirectory(prefix="braingemma3d-sign-") as folder:
        unsigned = build_pdf(
            report, bundle.images, Path(folder) / "final.pdf", draft=False, fields=bundle.fields
        )
        signed_bytes = _sign_bytes(unsigned.read_bytes(), creds, signer, now, reason, location)

    cert_der = _cert_der(creds.cert)
    record = {
        "format": AUDIT_FORMAT,
        "version": 1,
        "signer": signer,
        "signed_at": _utc(now),
        "reason": reason,
        "location": location,
        "certificate": {
            "subject": creds.cert.subject.rfc4514_string(),
            "issuer": creds.cert.issuer.rfc4514_string(),
            "serial": format(creds.cert.serial_number, "x"),
            "sha256": _sha256(cert_der),
            "self_signed": creds.cert.subject == creds.cert.issuer,
        },
        "draft_pdf": str(Path(draft_pdf)),
        "draft_pdf_sha256": _sha256(draft_bytes),
        "signed_pdf": str(out),
        "signed_pdf_sha256": _sha256(signed_bytes),
        "model": {k: draft.model.get(k) for k in ("name", "preset", "checkpoint_sha256")},
        "input": {k: draft.input.get(k) for k in ("paths", "sha256")},
        "edited": report.edited,
        "ai_draft_text": ai_text,
        "final_text": final_text,
        "diff": "\n".join(
            difflib.unified_diff(
                ai_text.splitlines(),
                final_text.splitlines(),
                fromfile="ai_draft",
                tofile="signed",
                lineterm="",
            )
        ),
        "warnings_at_signing": report.warning_texts,
        "entities_at_signing": report.entities,
        "ai_draft_entities": draft.with_text(ai_text).entities,
    }
    with atomic_path(out) as tmp_pdf, atomic_path(audit) as tmp_audit:
        tmp_pdf.write_bytes(signed_bytes)
        tmp_audit.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if out.exists() or audit.exists():  # appeared while we worked: still never overwrite
            raise InputError("exists; a signed PDF is never overwritten", out if out.exists() else audit)
    return {
        "signed_pdf": str(out),
        "audit": str(audit),
        "signer": signer,
        "signed_at": _utc(now),
        "edited": report.edited,
        "signed_pdf_sha256": record["signed_pdf_sha256"],
        "draft_pdf_sha256": record["draft_pdf_sha256"],
    }


def _cert_der(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.DER)


def _sign_bytes(
    pdf: bytes, creds: _Credentials, signer: str, now: datetime, reason: str, location: str | None
) -> bytes:
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.pdf_utils.text import TextBoxStyle
    from pyhanko.sign import fields, signers
    from pyhanko.stamp import TextStampStyle

    lines = ["Digitally signed by %(who)s", "Date: %(when)s", "Reason: %(reason)s"]
    params = {
        "who": _stamp_safe(signer),
        "when": now.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "reason": _stamp_safe(reason),
    }
    if location:
        lines.append("Location: %(where)s")
        params["where"] = _stamp_safe(location)
    meta = signers.PdfSignatureMetadata(
        field_name=SIGNATURE_FIELD,
        reason=reason,
        location=location,
        name=signer,
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
    )
    style = TextStampStyle(
        stamp_text="\n".join(lines),
        text_box_style=TextBoxStyle(font_size=9),
        border_width=1,
        background=None,
    )
    pdf_signer = signers.PdfSigner(
        meta,
        signer=_pyhanko_signer(creds),
        stamp_style=style,
        new_field_spec=fields.SigFieldSpec(sig_field_name=SIGNATURE_FIELD, on_page=-1, box=SIGNATURE_BOX),
    )
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    output = pdf_signer.sign_pdf(writer, appearance_text_params=params)
    return output.getvalue()


# --- verification -------------------------------------------------------------------------------------------


def _load_trust(paths) -> list:
    from asn1crypto import x509 as asn1_x509
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    roots = []
    for path in paths or []:
        data = _read(path, "trust certificate")
        try:
            certs = (
                x509.load_pem_x509_certificates(data)
                if b"-----BEGIN" in data
                else [x509.load_der_x509_certificate(data)]
            )
        except Exception:
            raise InputError("not an X.509 certificate (PEM or DER) or it is corrupted", path) from None
        roots += [asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in certs]
    return roots


#: What may change after a signature without invalidating it: nothing, document-timestamp/validation data,
#: or form filling, which includes adding the next signature (pyHanko's difference analysis decides).
_ALLOWED_AFTER = {"NONE": "nothing", "LTA_UPDATES": "validation data only", "FORM_FILLING": "signatures only"}


def verify_pdf(path: str | os.PathLike, trust: list[str | os.PathLike] | None = None) -> dict:
    """Check every signature of a signed report PDF, offline, and what changed after each one.

    Each signature gets ``intact`` (the bytes it signed are unchanged), ``valid`` (cryptographically
    correct), ``trusted`` (its certificate chains to one of ``trust`` with a key usage that allows signing;
    always False without ``trust``), ``covers_whole_file`` (it signs the file as it is now), ``changed_after``
    (what later revisions did: nothing, signatures only, or other changes with pyHanko's own description) and
    ``modified`` (True when a later revision changed the content it covers beyond adding signatures or
    filling form fields: a replaced page, say).  The first signature is the radiologist's and the one that
    matters: the top-level ``signer`` and ``signing_time`` are its; ``intact``, ``valid``, ``trusted`` hold
    for all signatures, ``covers_whole_file`` is the last one's, and ``modified`` is True when any signature
    was modified.  ``ok`` is the verdict.  A damaged file whose signature can still be found reports a failed
    check rather than raising; a PDF with no signature, or one that cannot be read, raises
    :class:`InputError`.
    """
    from pyhanko.pdf_utils.reader import PdfFileReader

    p = Path(path)
    data = _read(p, "PDF")
    roots = _load_trust(trust)
    if not data.startswith(b"%PDF-"):
        raise InputError("not a PDF file", p)
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=False)
        signatures = sorted(reader.embedded_signatures, key=lambda sig: sig.signed_revision)
    except Exception:
        raise InputError("unreadable or corrupted PDF", p) from None
    if not signatures:
        raise InputError("the PDF has no digital signature (is it the unsigned draft?)", p)

    results = [_check_signature(sig, roots) for sig in signatures]
    first, last = results[0], results[-1]
    result = {
        "intact": all(r["intact"] for r in results),
        "valid": all(r["valid"] for r in results),
        "trusted": all(r["trusted"] for r in results),
        "covers_whole_file": last["covers_whole_file"],
        "modified": any(r["modified"] for r in results),
        "signer": first["signer"],
        "certificate_subject": first["certificate_subject"],
        "signing_time": first["signing_time"],
        "signatures": results,
    }
    result["ok"] = (
        result["intact"]
        and result["valid"]
        and result["covers_whole_file"]
        and not result["modified"]
        and (result["trusted"] or not roots)
    )
    result["summary"] = _summary(result, results, bool(roots))
    return result


def verified_audit(signed: str | os.PathLike, trust: list | None = None) -> tuple[dict, dict]:
    """(:func:`verify_pdf`'s result, the audit record) of a signed report that can be relied on: its signature
    verifies and the audit record beside it describes this very file. Anything else is an
    :class:`InputError` naming the file (what the DICOM export and ``curate`` both require)."""
    path = Path(signed)
    result = verify_pdf(path, trust=trust)
    if not result["ok"]:
        raise InputError(f"the signature does not verify: {result['summary']}", path)
    audit_file = audit_path(path)
    try:
        audit = json.loads(audit_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError("the signed PDF's audit record is missing or unreadable", audit_file) from None
    if not isinstance(audit, dict) or audit.get("signed_pdf_sha256") != _sha256(_read(path, "PDF")):
        raise InputError("the signed PDF is not the one its audit record describes", path)
    return result, audit


def _check_signature(sig, roots: list) -> dict:
    """One signature: pyHanko's cryptographic, trust and difference checks, plus our padding check."""
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko.sign.validation.settings import KeyUsageConstraints
    from pyhanko.sign.validation.status import SignatureCoverageLevel
    from pyhanko_certvalidator import ValidationContext

    usage = KeyUsageConstraints(
        key_usage={"digital_signature", "non_repudiation"}, match_all_key_usages=False
    )
    context = ValidationContext(trust_roots=roots, allow_fetching=False)
    name = _sig_name(sig)
    entry = {
        "field": getattr(sig, "field_name", None),
        "signer": name,
        "certificate_subject": None,
        "signing_time": None,
        "intact": False,
        "valid": False,
        "trusted": False,
        "covers_whole_file": False,
        "changed_after": None,
        "modified": True,
        "problem": None,
    }
    try:
        with _Quiet():
            status = validate_pdf_signature(sig, context, key_usage_settings=usage)
    except Exception as exc:  # damaged signature data: a failed check, not a crash
        log.debug("signature validation failed", exc_info=True)
        entry["problem"] = f"the signature could not be checked ({type(exc).__name__}: {exc})"
        return entry
    level = getattr(status.modification_level, "name", None)
    covers = status.coverage == SignatureCoverageLevel.ENTIRE_FILE
    if level in _ALLOWED_AFTER and status.docmdp_ok is not False:
        changed, modified = _ALLOWED_AFTER[level], False
    elif level is None and covers:
        changed, modified = "nothing", False
    else:
        detail = status.diff_result if isinstance(status.diff_result, Exception) else None
        why = str(detail).splitlines()[0][:160] if detail else f"modification level {level}"
        changed, modified = f"content changed beyond signatures and form fields; pyHanko: {why}", True
    when = status.signer_reported_dt
    entry.update(
        certificate_subject=status.signing_cert.subject.human_friendly,
        signer=name or status.signing_cert.subject.human_friendly,
        signing_time=_utc(when) if when else None,
        intact=bool(status.intact) and _padding_is_zero(sig),
        valid=bool(status.valid),
        trusted=bool(roots) and bool(status.trusted),
        covers_whole_file=covers,
        changed_after=changed,
        modified=modified,
    )
    if status.intact and not entry["intact"]:
        entry["problem"] = "bytes in the signature's reserved space were changed after signing"
    return entry


def _padding_is_zero(sig) -> bool:
    """The signature value is written into a zero-filled hole; anything but zeros after it was put there
    later (it is not signed content, but an untouched file never has it)."""
    from asn1crypto import parser

    try:
        raw = bytes(sig.sig_object["/Contents"])
        _cls, _method, _tag, header, contents, _rest = parser.parse(raw)
    except Exception:
        return False
    return not raw[len(header) + len(contents) :].strip(b"\x00")


class _Quiet:
    """Mute pyHanko's own log while validating: it logs an untrusted self-signed certificate as an error with
    a traceback, which the one-line summary already says (shown again with ``--debug``)."""

    names = ("pyhanko", "pyhanko_certvalidator")

    def __enter__(self) -> None:
        self.levels = [logging.getLogger(n).level for n in self.names]
        if not log.isEnabledFor(logging.DEBUG):
            for n in self.names:
                logging.getLogger(n).setLevel(logging.CRITICAL)

    def __exit__(self, *exc) -> None:
        for n, level in zip(self.names, self.levels, strict=True):
            logging.getLogger(n).setLevel(level)


def _sig_name(sig) -> str | None:
    try:
        value = sig.sig_object.get("/Name")
        return str(value) if value is not None else None
    except Exception:
        return None


def _summary(result: dict, signatures: list[dict], has_trust: bool) -> str:
    first = signatures[0]
    broken = next((r for r in signatures if r["problem"]), None)
    if broken is not None:
        return f"FAILED: {broken['problem']}"
    if not result["intact"]:
        return "FAILED: the document was changed after it was signed (signed bytes do not match)"
    if not result["valid"]:
        return "FAILED: the signature is not cryptographically valid"
    who = f"signed by {first['signer']} at {first['signing_time']}"
    changed = next((r for r in signatures if r["modified"]), None)
    if changed is not None:
        return (
            f"FAILED: {who}, but a later revision changed what {changed['signer']} signed "
            "(more than adding signatures or filling form fields)"
        )
    if not result["covers_whole_file"]:
        return f"FAILED: {who}, but content was added after signing (the shown page may differ)"
    more = f" (+{len(signatures) - 1} later signature(s))" if len(signatures) > 1 else ""
    if not has_trust:
        return f"OK: intact and valid, {who}{more}; certificate not checked (no --trust given)"
    if not result["trusted"]:
        untrusted = next(r for r in signatures if not r["trusted"])
        return (
            f"NOT TRUSTED: intact and valid, {who}{more}, "
            f"but {untrusted['signer']}'s certificate is not among --trust"
        )
    return f"OK: intact, valid and trusted, {who}{more}"
