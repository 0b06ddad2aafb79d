"""V-Min and V-Half (Qi et al. 2024, "Pipeline Parallelism with Controllable Memory"): pure functions
of integers on the V placement (device d holds stage d and stage 2p-1-d).

The paper builds a schedule by repeating one building block: on device d, the block of
micro-batch j puts the forward of chunk 0, the forward of chunk 1, the input-gradient pass of chunk
1 and that of chunk 0 at fixed offsets of a unit-time grid, shifted by 6j (six passes per block).
The block's lifespan sets the peak memory: V-Min holds about a third of 1F1B's activations, V-Half
half. The repeated blocks are then "squeezed": W passes go into the empty slots, passes of the
warm-up and cool-down move to the earliest free slot their dependencies allow as long as the
device's peak stays the same, the unit-time grid is re-timed as soon as possible, the squeeze is
repeated without W and the W passes are put back, one list per chunk. The per-device order of the
final grid is the schedule; the simulator gives it real times.

Memory on the grid (the paper's own count): +1 at each forward, 0 at I, -1 at W.
"""

from __future__ import annotations

import heapq

from parplan.schedule.ir import Action, F, I, W

Orders = list[list[Action]]

# Pass types on a device, in the paper's order: F chunk 0, F chunk 1, I chunk 1, I chunk 0,
# then W (one list for both chunks while squeezing, or W chunk 1, W chunk 0 at the end).
_F0, _F1, _I1, _I0, _W = range(5)
_GRID_MEMORY = (1, 1, 0, 0, -1, -1)

Grid = list[list[list[int]]]  # grid[device][type][microbatch] = slot


def v_min_block(num_devices: int) -> list[tuple[int, int, int, int]]:
    """V-Min's block offsets (F0, F1, I1, I0) per device; a gap of 2 slots when 3 divides p."""
    p = num_devices
    gap = 2 if p % 3 == 0 else 0
    return [(d, 2 * p - d - 1, 2 * p + gap + d, 4 * p + gap - d - 1) for d in range(p)]


def v_half_block(num_devices: int) -> list[tuple[int, int, int, int]]:
    """V-Half's block offsets (F0, F1, I1, I0) per device; a gap of 3 slots when p is even."""
    p = num_devices
    gap = 3 if p % 2 == 0 else 0
    return [(2 * d, 3 * p - d - 2, 3 * p + gap + 2 * d - 1, 6 * p + gap - d - 2) for d in range(p)]


def v_min(num_devices: int, num_microbatches: int) -> Orders:
    """V-Min: about 1/3 of 1F1B's activation memory, bubble about 2p/3m of the step."""
    return _from_block(v_min_block(num_devices), num_microbatches)


def v_half(num_devices: int, num_microbatches: int) -> Orders:
    """V-Half: about 1/2 of 1F1B's activation memory, bubble about p/2m of the step."""
    return _from_block(v_half_block(num_devices), num_microbatches)


# ---------------------------------------------------------------------------- the construction


def _from_block(block: list[tuple[int, int, int, int]], m: int) -> Orders:
    grid: Grid = [[list(range(offset, offset + 6 * m, 6)) for offset in dev] for dev in block]
    grid = _squeeze([_with_w(dev, split=False) for dev in grid], with_w=True)
    grid = _squeeze([dev[:4] for dev in grid], with_w=False)
    grid = [_with_w(dev[:4], split=True) for dev in grid]
    return _orders(grid)


def _with_w(dev: list[list[int]], *, split: bool) -> list[list[int]]:
    """Put each W into the first empty slot after its I (chunk 1's first when both wait)."""
    taken = {slot: t for t, slots in enumerate(dev) for slot in slots}
    end = max(taken) + 1
    w_lists: list[list[int]] = [[], []]
    waiting = [0, 0]
    for slot in range(end):
        t = taken.get(slot)
        if t in (_I1, _I0):
            waiting[t - _I1 if split else 0] += 1
        elif t is None:
            for k in (0, 1):
                if waiting[k]:
                    w_lists[k].append(slot)
                    waiting[k] -= 1
                    break
    for k in (0, 1):
        for _ in range(waiting[k]):
            w_lists[k].append(end)
            end += 1
    return [*dev, *(w_lists if split else w_lists[:1])]


def _peak(dev: list[list[int]]) -> int:
    """The device's peak on the grid; without W lists an empty slot frees one pending W."""
    events = sorted((slot, t) for t, slots in enumerate(dev) for slot in slots)
    has_w = len(dev) > 4
    level = peak = pending = 0
    last = -1
    for slot, t in events:
        if not has_w:  # the empty slots before this pass run pending W
            freed = min(pending, slot - last - 1)
            level, pending = level - freed, pending - freed
        level += _GRID_MEMORY[t]
        if t in (_I1, _I0):
            pending += 1
        peak = max(peak, level)
        last = slot
    return peak


def _deps(grid: Grid, d: int, t: int, j: int, *, w_after_i: bool = True) -> int:
    """The latest slot among the passes that (d, t, j) depends on (-1 when none)."""
    p = len(grid)
    dev = grid[d]
    slots = [-1]
    if t in (_F0, _I1) and d > 0:  # these flow from device d-1 to d
        slots.append(grid[d - 1][t][j])
    if t in (_F1, _I0) and d < p - 1:  # these flow from device d+1 to d
        slots.append(grid[d + 1][t][j])
    if t in (_F1, _I1, _I0):
        slots.append(dev[t - 1][j])
    if t == _W and w_after_i:  # the j-th W follows the j-th I of either chunk
        slots.append(sorted(dev[_I1] + dev[_I0])[j])
    if j > 0:
        slots.append(dev[t][j - 1])
    return max(slots)


def _squeeze(grid: Grid, *, with_w: bool) -> Grid:
    """Move warm-up (only ``with_w``) and cool-down passes to earlier free slots without raising
    the highest device peak; the steady state (device 0's first I0 to the last F0) stays."""
    limit = max(_peak(dev) for dev in grid)
    occupied = [set[int]() for _ in grid]
    m = len(grid[0][0])
    heap = [(grid[d][t][0], d, t, 0) for d in range(len(grid)) for t in range(len(grid[d]))]
    heapq.heapify(heap)
    phase = 0  # 0 warm-up, 1 steady, 2 cool-down
    while heap:
        slot, d, t, j = heapq.heappop(heap)
        if t == _I0 and d == 0 and phase == 0:
            phase = 1
        keep = phase == 1 or (phase == 0 and not with_w)
        if phase == 1 and t == _F0 and j == m - 1:
            phase = 2
        if not keep:
            for earlier in range(_deps(grid, d, t, j) + 1, slot):
                if earlier in occupied[d]:
                    continue
                grid[d][t][j] = earlier
                if (with_w and t != _F0 and t != _F1) or _peak(grid[d]) <= limit:
                    break  # with W on the grid only a forward moved earlier can raise the peak
            else:
                grid[d][t][j] = slot
        occupied[d].add(grid[d][t][j])
        if j + 1 < m:
            heapq.heappush(heap, (grid[d][t][j + 1], d, t, j + 1))
    if not with_w:  # re-time with the W passes in the free slots, so their slots stay free
        grid = [_with_w(dev, split=False) for dev in grid]
    return _asap(grid)


def _asap(grid: Grid) -> Grid:
    """Re-time the grid as soon as possible with unit passes, keeping each device's order (a W
    needs only its device's order here: its I comes earlier on the same device)."""
    order = sorted(
        (slot, d, t, j)
        for d, dev in enumerate(grid)
        for t, slots in enumerate(dev)
        for j, slot in enumerate(slots)
    )
    out: Grid = [[[-1] * len(slots) for slots in dev] for dev in grid]
    free = [0] * len(grid)
    for _, d, t, j in order:
        ready = _deps(out, d, t, j, w_after_i=False) + 1  # dependencies have smaller slots: done
        out[d][t][j] = max(free[d], ready)
        free[d] = out[d][t][j] + 1
    return out


def _orders(grid: Grid) -> Orders:
    p = len(grid)
    orders: Orders = []
    for d, dev in enumerate(grid):
        chunk0, chunk1 = d, 2 * p - 1 - d
        make = ((F, chunk0), (F, chunk1), (I, chunk1), (I, chunk0), (W, chunk1), (W, chunk0))
        passes = sorted((slot, t, j) for t, slots in enumerate(dev) for j, slot in enumerate(slots))
        orders.append([make[t][0](make[t][1], j) for _, t, j in passes])
    return orders
