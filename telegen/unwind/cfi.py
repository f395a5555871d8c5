"""A decoder of ``.eh_frame`` / ``.debug_frame`` made for the unwinder.

It reads CIEs and FDEs straight from the section bytes and interprets the
call-frame instructions only as far as the x86-64 unwinder needs: the CFA
rule, where the return address (DWARF register 16) and rbp (6) are saved.
Every row comes out as the compact rule of :mod:`telegen.unwind.table`,
``(kind, cfa_offset, rbp_offset, ra_offset)``; nothing else is kept.

Rows follow DWARF's (and pyelftools') table semantics exactly — a row per
location advance, the CIE's last row as the FDE's first, remember/restore
state, ``DW_CFA_restore`` to the CIE's rule — so the tables are the ones the
former pyelftools build produced (``tests/unit/unwind/test_cfi_decoder.py``
compares them on libc, libpython, libjvm and a Go binary). Two departures,
both on input no compiler emits for x86-64: ``DW_CFA_def_cfa_sf`` scales its
offset by the data alignment factor (the standard; pyelftools used the code
alignment factor), and an unknown opcode drops its FDE only (pyelftools
dropped the whole section).

FDEs whose instruction bytes are identical (the same prologue shape: most
functions of a big library) are interpreted once: the rows are relative to
the FDE's start, so they are memoized by ``(CIE, instructions)``.

Bounds: every read is bounds-checked against the section (``IndexError`` /
``struct.error`` end the entry, which is then skipped); the remember-state
stack is at most :data:`MAX_REMEMBER_DEPTH` deep (compilers nest one or two
levels), deeper is :class:`CfiBomb`, which rejects the object.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator

from telegen.unwind.table import OUTERMOST, PLT, RBP, RSP, UNSUPPORTED, Rule

REG_RBP, REG_RSP, REG_RA = 6, 7, 16
MAX_REMEMBER_DEPTH = 64
MEMO_ENTRIES = 1 << 16            # distinct instruction strings memoized per section
_PLT_PREFIX = bytes([0x77, 8, 0x80, 0, 0x3F, 0x1A])   # breg7 8; breg16 0; lit15; and
_DW_OP_LIT0 = 0x30

# register rule kinds (only what row_rule distinguishes)
_UNDEFINED, _SAME, _OFFSET, _OTHER = 0, 1, 2, 3

_U16, _U32, _U64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")
_S16, _S32, _S64 = struct.Struct("<h"), struct.Struct("<i"), struct.Struct("<q")

# the rows of one FDE relative to its start: (pc delta, delta of the next row or
# -1 for the last one, rule index), in order, before clipping to the FDE's range
RelRows = tuple[tuple[int, int, int], ...]
# section bytes: read (bytes) or mapped (mmap) — both index to int and slice to bytes
Buffer = bytes | mmap.mmap


class CfiBomb(Exception):
    """Instructions built to exhaust the decoder (remember-state nesting)."""


class CfiError(Exception):
    """One entry cannot be decoded (its FDE is skipped)."""


def _uleb(data: Buffer, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise CfiError("LEB128 too long")


def _sleb(data: Buffer, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            if b & 0x40:
                result -= 1 << shift
            return result, pos
        if shift > 70:
            raise CfiError("LEB128 too long")


def _encoded(data: Buffer, pos: int, enc: int, field_address: int) -> tuple[int, int]:
    """A DW_EH_PE-encoded pointer at ``pos``; pc-relative ones are made absolute
    (``field_address``: the link-time address of the field), other
    applications (datarel, textrel…) are left as read, as pyelftools does."""
    fmt = enc & 0x0F
    if fmt == 0x00:
        value, end = _U64.unpack_from(data, pos)[0], pos + 8
    elif fmt == 0x01:
        value, end = _uleb(data, pos)
    elif fmt == 0x02:
        value, end = _U16.unpack_from(data, pos)[0], pos + 2
    elif fmt == 0x03:
        value, end = _U32.unpack_from(data, pos)[0], pos + 4
    elif fmt == 0x04:
        value, end = _U64.unpack_from(data, pos)[0], pos + 8
    elif fmt == 0x09:
        value, end = _sleb(data, pos)
    elif fmt == 0x0A:
        value, end = _S16.unpack_from(data, pos)[0], pos + 2
    elif fmt == 0x0B:
        value, end = _S32.unpack_from(data, pos)[0], pos + 4
    elif fmt == 0x0C:
        value, end = _S64.unpack_from(data, pos)[0], pos + 8
    else:
        raise CfiError(f"pointer encoding {enc:#x}")
    if enc & 0x70 == 0x10:
        value += field_address
    return value, end


class Cie:
    __slots__ = ("code_align", "data_align", "ra_reg", "fde_enc", "has_z", "initial", "base")

    def __init__(self) -> None:
        self.code_align = 1
        self.data_align = 1
        self.ra_reg = REG_RA
        self.fde_enc = 0
        self.has_z = False
        self.initial = b""
        # the CIE's last row: (cfa_reg, cfa_off, cfa_expr, regs) or None
        self.base: State | None = None


def _parse_cie(data: Buffer, pos: int, end: int, eh: bool, address: int, offset_size: int) -> Cie:
    cie = Cie()
    version = data[pos]
    pos += 1
    zero = data.find(b"\0", pos, end)
    if zero < 0:
        raise CfiError("CIE augmentation without its end")
    aug = bytes(data[pos:zero])
    pos = zero + 1
    if aug == b"eh":
        pos += offset_size
    if not eh and version >= 4:
        pos += 2                       # address_size, segment_selector_size
    cie.code_align, pos = _uleb(data, pos)
    cie.data_align, pos = _sleb(data, pos)
    if version == 1:
        cie.ra_reg = data[pos]
        pos += 1
    else:
        cie.ra_reg, pos = _uleb(data, pos)
    if aug.startswith(b"z"):
        cie.has_z = True
        length, pos = _uleb(data, pos)
        aug_end = pos + length
        for ch in aug[1:]:
            if ch == 0x52:                 # R: FDE pointer encoding
                cie.fde_enc = data[pos]
                pos += 1
            elif ch == 0x50:               # P: personality (encoding, pointer)
                enc = data[pos]
                _value, pos = _encoded(data, pos + 1, enc & 0x7F, address + pos + 1)
            elif ch == 0x4C:               # L: LSDA encoding
                pos += 1
            elif ch in (0x53, 0x42):       # S: signal frame; B: AArch64 B key
                continue
            else:
                break
        pos = aug_end
    elif aug not in (b"", b"eh"):
        raise CfiError(f"unknown CIE augmentation {aug!r}")
    if pos > end:
        raise CfiError("CIE past its end")
    cie.initial = bytes(data[pos:end])
    return cie


def _rule(cfa_reg: int | None, cfa_off: int | None, cfa_expr: bytes | None,
          regs: dict[int, tuple[int, int]]) -> Rule:
    """One row as a compact rule (the former ``row_rule``, on our own state)."""
    ra = regs.get(REG_RA)
    if ra is None or ra[0] == _UNDEFINED:
        return (OUTERMOST, 0, 0, 0)
    if ra[0] != _OFFSET:
        return (UNSUPPORTED, 0, 0, 0)
    ra_off = ra[1]
    rbp = regs.get(REG_RBP)
    rbp_off = 0
    if rbp is not None:
        if rbp[0] == _OFFSET:
            rbp_off = rbp[1]
        elif rbp[0] == _OTHER:
            return (UNSUPPORTED, 0, 0, 0)
    if cfa_expr is not None:
        if cfa_expr[:6] == _PLT_PREFIX and len(cfa_expr) > 6 and \
                _DW_OP_LIT0 <= cfa_expr[6] < _DW_OP_LIT0 + 32:
            return (PLT, cfa_expr[6] - _DW_OP_LIT0, rbp_off, ra_off)
        return (UNSUPPORTED, 0, 0, 0)
    if cfa_reg not in (REG_RSP, REG_RBP):
        return (UNSUPPORTED, 0, 0, 0)
    if cfa_off is None:               # def_cfa_register after an expression
        raise CfiError("CFA register without an offset")
    return (RSP if cfa_reg == REG_RSP else RBP, cfa_off, rbp_off, ra_off)


State = tuple[int | None, int | None, bytes | None, dict[int, tuple[int, int]]]


def interpret(cie: Cie, code: bytes, *, in_fde: bool
              ) -> tuple[list[tuple[int, Rule]], State | None]:
    """The rows of ``code`` as ``(pc delta, rule)``, starting from the CIE's
    base row (FDE) or from nothing (the CIE's own initial instructions), and
    the state of the last row (for a CIE: the FDEs' base)."""
    base = cie.base if in_fde else None
    if base is not None:
        cfa_reg, cfa_off, cfa_expr, base_regs = base
        regs = dict(base_regs)
    else:
        cfa_reg, cfa_off, cfa_expr, regs = None, 0, None, {}
        base_regs = {}
    rows: list[tuple[int, Rule]] = []
    states: list[State] = []
    stack: list[State] = []
    pc = 0
    caf, daf = cie.code_align, cie.data_align
    pos, n = 0, len(code)
    while pos < n:
        op = code[pos]
        pos += 1
        high = op & 0xC0
        if high == 0x40:                                   # advance_loc
            rows.append((pc, _rule(cfa_reg, cfa_off, cfa_expr, regs)))
            if not in_fde:
                states.append((cfa_reg, cfa_off, cfa_expr, dict(regs)))
            pc += (op & 0x3F) * caf
            continue
        if high == 0x80:                                   # offset
            off, pos = _uleb(code, pos)
            regs[op & 0x3F] = (_OFFSET, off * daf)
            continue
        if high == 0xC0:                                   # restore
            _restore(op & 0x3F, regs, base, in_fde)
            continue
        if op == 0x00:                                     # nop
            continue
        if op in (0x02, 0x03, 0x04, 0x01):                 # advance_loc1/2/4, set_loc
            if op == 0x02:
                delta, pos = code[pos] * caf, pos + 1
            elif op == 0x03:
                delta, pos = _U16.unpack_from(code, pos)[0] * caf, pos + 2
            elif op == 0x04:
                delta, pos = _U32.unpack_from(code, pos)[0] * caf, pos + 4
            else:
                raise CfiError("DW_CFA_set_loc")           # absolute: handled by the caller
            rows.append((pc, _rule(cfa_reg, cfa_off, cfa_expr, regs)))
            if not in_fde:
                states.append((cfa_reg, cfa_off, cfa_expr, dict(regs)))
            pc += delta
        elif op == 0x0C:                                   # def_cfa
            cfa_reg, pos = _uleb(code, pos)
            cfa_off, pos = _uleb(code, pos)
            cfa_expr = None
        elif op == 0x0E:                                   # def_cfa_offset
            cfa_off, pos = _uleb(code, pos)
            cfa_expr = None
        elif op == 0x0D:                                   # def_cfa_register
            cfa_reg, pos = _uleb(code, pos)
            cfa_expr = None
        elif op == 0x12:                                   # def_cfa_sf
            cfa_reg, pos = _uleb(code, pos)
            off, pos = _sleb(code, pos)
            cfa_off, cfa_expr = off * daf, None
        elif op == 0x13:                                   # def_cfa_offset_sf
            off, pos = _sleb(code, pos)
            cfa_off, cfa_expr = off * daf, None
        elif op == 0x0F:                                   # def_cfa_expression
            length, pos = _uleb(code, pos)
            cfa_expr, cfa_reg, cfa_off = bytes(code[pos:pos + length]), None, None
            pos += length
            if pos > n:
                raise CfiError("expression past the end")
        elif op in (0x05, 0x11):                           # offset_extended(_sf)
            reg, pos = _uleb(code, pos)
            off, pos = _uleb(code, pos) if op == 0x05 else _sleb(code, pos)
            regs[reg] = (_OFFSET, off * daf)
        elif op in (0x14, 0x15):                           # val_offset(_sf)
            reg, pos = _uleb(code, pos)
            off, pos = _uleb(code, pos) if op == 0x14 else _sleb(code, pos)
            regs[reg] = (_OTHER, 0)
        elif op == 0x07:                                   # undefined
            reg, pos = _uleb(code, pos)
            regs[reg] = (_UNDEFINED, 0)
        elif op == 0x08:                                   # same_value
            reg, pos = _uleb(code, pos)
            regs[reg] = (_SAME, 0)
        elif op == 0x09:                                   # register
            reg, pos = _uleb(code, pos)
            _other, pos = _uleb(code, pos)
            regs[reg] = (_OTHER, 0)
        elif op in (0x10, 0x16):                           # (val_)expression
            reg, pos = _uleb(code, pos)
            length, pos = _uleb(code, pos)
            pos += length
            if pos > n:
                raise CfiError("expression past the end")
            regs[reg] = (_OTHER, 0)
        elif op == 0x06:                                   # restore_extended
            reg, pos = _uleb(code, pos)
            _restore(reg, regs, base, in_fde)
        elif op == 0x0A:                                   # remember_state
            if len(stack) >= MAX_REMEMBER_DEPTH:
                raise CfiBomb(f"remember_state nested deeper than {MAX_REMEMBER_DEPTH}")
            stack.append((cfa_reg, cfa_off, cfa_expr, dict(regs)))
        elif op == 0x0B:                                   # restore_state
            if not stack:
                raise CfiError("restore_state without remember_state")
            cfa_reg, cfa_off, cfa_expr, regs = stack.pop()
        elif op == 0x2E:                                   # GNU_args_size: no CFA change
            _size, pos = _uleb(code, pos)
        elif op == 0x2F:                                   # GNU_negative_offset_extended
            reg, pos = _uleb(code, pos)
            off, pos = _uleb(code, pos)
            regs[reg] = (_OFFSET, -off * daf)
        elif op == 0x2D:                                   # GNU_window_save (SPARC/AArch64)
            pass
        else:
            raise CfiError(f"unknown CFI opcode {op:#x}")
    if pos > n:
        raise CfiError("instruction past the end")
    if cfa_reg is not None or regs:       # the state after the last instruction
        rows.append((pc, _rule(cfa_reg, cfa_off, cfa_expr, regs)))
        if not in_fde:
            states.append((cfa_reg, cfa_off, cfa_expr, dict(regs)))
    return rows, (states[-1] if states else None)


def _restore(reg: int, regs: dict[int, tuple[int, int]], base: object, in_fde: bool) -> None:
    if not in_fde or base is None:
        raise CfiError("DW_CFA_restore outside an FDE or without a CIE row")
    base_regs = base[3]  # type: ignore[index]
    if reg in base_regs:
        regs[reg] = base_regs[reg]
    else:
        regs.pop(reg, None)


def fde_rows(data: Buffer, address: int, *, eh: bool, rules: dict[Rule, int],
             skipped: list[int] | None = None) -> Iterator[tuple[int, int, RelRows]]:
    """Every FDE of a ``.eh_frame`` (``eh``) or ``.debug_frame`` section as
    ``(start, end, rows relative to start)``; the rows' rules are indices
    into ``rules`` (rule → index, filled as rules are met). ``address`` is
    the section's link-time address (pc-relative pointers). Undecodable FDEs
    are skipped and counted in ``skipped[0]``."""
    cies: dict[int, Cie | None] = {}
    memo: dict[tuple[int, bytes], RelRows] = {}
    size = len(data)
    pos = 0
    while pos + 4 <= size:
        start_of_entry = pos
        length = _U32.unpack_from(data, pos)[0]
        pos += 4
        offset_size = 4
        if length == 0xFFFFFFFF:
            if pos + 8 > size:
                break
            length = _U64.unpack_from(data, pos)[0]
            pos += 8
            offset_size = 8
        if length == 0:              # a terminator (.eh_frame); go on past it
            continue
        end = pos + length
        if end > size:
            break
        id_pos = pos
        cie_id = (_U32 if offset_size == 4 else _U64).unpack_from(data, pos)[0]
        pos += offset_size
        is_cie = cie_id == 0 if eh else cie_id == (0xFFFFFFFF if offset_size == 4
                                                     else 0xFFFFFFFFFFFFFFFF)
        try:
            if is_cie:
                if start_of_entry not in cies:
                    cies[start_of_entry] = _cie_at(data, start_of_entry, eh, address)
            else:
                cie_off = id_pos - cie_id if eh else cie_id
                cie = cies.get(cie_off)
                if cie is None and cie_off not in cies:
                    cie = cies[cie_off] = _cie_at(data, cie_off, eh, address)
                if cie is None:
                    raise CfiError("FDE of an undecodable CIE")
                got = _fde(data, pos, end, cie, cie_off, address, eh, memo, rules)
                if got is not None:
                    yield got
        except CfiBomb:
            raise
        except (CfiError, IndexError, ValueError, struct.error):
            if not is_cie and skipped is not None:
                skipped[0] += 1
        pos = end


def _cie_at(data: Buffer, offset: int, eh: bool, address: int) -> Cie | None:
    try:
        length = _U32.unpack_from(data, offset)[0]
        pos, offset_size = offset + 4, 4
        if length == 0xFFFFFFFF:
            length = _U64.unpack_from(data, pos)[0]
            pos, offset_size = pos + 8, 8
        end = pos + length
        if end > len(data) or offset < 0:
            return None
        cie = _parse_cie(data, pos + offset_size, end, eh, address, offset_size)
        _rows, cie.base = interpret(cie, cie.initial, in_fde=False)
        return cie
    except CfiBomb:
        raise
    except (CfiError, IndexError, ValueError, struct.error):
        return None


_PCREL_SDATA4 = struct.Struct("<ii")


def _fde(data: Buffer, pos: int, end: int, cie: Cie, cie_off: int, address: int, eh: bool,
         memo: dict[tuple[int, bytes], RelRows], rules: dict[Rule, int]
         ) -> tuple[int, int, RelRows] | None:
    enc = cie.fde_enc if eh else 0x00
    if enc == 0x1B:                        # pcrel|sdata4: what GCC and LLVM emit
        start, span = _PCREL_SDATA4.unpack_from(data, pos)
        start += address + pos
        pos += 8
    else:
        start, pos = _encoded(data, pos, enc, address + pos)
        span, pos = _encoded(data, pos, enc & 0x0F, 0)
    if cie.has_z:
        aug_len = data[pos]
        if aug_len < 0x80:
            pos += 1 + aug_len
        else:
            aug_len, pos = _uleb(data, pos)
            pos += aug_len
    if pos > end:
        raise CfiError("FDE past its end")
    code = bytes(data[pos:end])
    key = (cie_off, code)
    rel = memo.get(key)
    if rel is None:
        rows, _state = interpret(cie, code, in_fde=True)
        out = []
        for i, (delta, rule) in enumerate(rows):
            idx = rules.get(rule)
            if idx is None:
                idx = rules[rule] = len(rules)
            out.append((delta, rows[i + 1][0] if i + 1 < len(rows) else -1, idx))
        rel = tuple(out)
        if len(memo) < MEMO_ENTRIES:
            memo[key] = rel
    return start, start + span, rel
