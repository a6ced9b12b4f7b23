"""Hand geometry: tapered capsules along the bones, a convex palm and a forearm stub.

All capsules of a hand are built at once from one cached template (a UV sphere
split at its equator: the lower half is centred on one end of the bone, the upper
half on the other, and the band between the two equator rings is the shaft), so a
hand costs a few array operations. The palm is the convex hull of spheres placed
at the wrist, the knuckles, the hypothenar and the thenar; its vertices are sphere
samples, so their outward normals are known exactly and shading is smooth.

Parts are numbered as in RHD's masks, within one hand: ``3 * finger + segment``
with finger 0 thumb .. 4 little and segment 0 distal (tip) .. 2 proximal, then
15 palm. Part 16 is the forearm stub, written as RHD's "person" label.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull

from crossmodal.data.joints import NUM_JOINTS
from crossmodal.data.synthetic.skeleton import FINGER_JOINTS, HandShape, Skeleton

PALM_PART = 15
FOREARM_PART = 16
NUM_PARTS = 17

#: Tolerance margin for the visibility test: the mesh is a polygonal approximation.
SURFACE_MARGIN_M = 0.003


def finger_part(finger: int, segment_from_tip: int) -> int:
    """Part number of a finger segment: finger 0 thumb .. 4 little, segment 0 = distal."""
    return 3 * finger + segment_from_tip


def _own_parts() -> np.ndarray:
    """(21, 17) bool: the parts whose surface a joint lies under (it cannot occlude it)."""
    own = np.zeros((NUM_JOINTS, NUM_PARTS), dtype=bool)
    own[0, [PALM_PART, FOREARM_PART]] = True
    for f, chain in enumerate(FINGER_JOINTS):  # chain: root, next, next, tip
        own[chain[0], [PALM_PART, finger_part(f, 2)]] = True
        for k in (1, 2):
            own[chain[k], [finger_part(f, 3 - k), finger_part(f, 2 - k)]] = True
        own[chain[3], finger_part(f, 0)] = True
    return own


#: OWN_PARTS[j, p]: part p is one of the parts that surround joint j.
OWN_PARTS = _own_parts()


@dataclass(frozen=True)
class HandMesh:
    """A closed-ish triangle soup with per-vertex outward normals and per-triangle parts."""

    vertices: np.ndarray  # (V, 3) float64
    normals: np.ndarray  # (V, 3) float64, unit
    triangles: np.ndarray  # (T, 3) uint32
    triangle_part: np.ndarray  # (T,) int64 in [0, 17)
    joints: np.ndarray  # (21, 3) the skeleton's joints, same frame as the vertices
    joint_tolerance: np.ndarray  # (21,) how far under its own surface a joint may lie (m)
    bone_segments: np.ndarray  # (15, 2, 3) capsule centres of the finger/thumb bones
    bone_radii: np.ndarray  # (15, 2) capsule radii at those centres
    hand_vertex_count: int  # vertices [0, hand_vertex_count) are the hand, the rest the forearm

    def transformed(self, rotation: np.ndarray, translation: np.ndarray) -> "HandMesh":
        """The same mesh under x -> R x + t (a rotation, or a reflection: normals follow)."""
        r = np.asarray(rotation, dtype=np.float64)
        t = np.asarray(translation, dtype=np.float64)
        return HandMesh(
            vertices=self.vertices @ r.T + t,
            normals=self.normals @ r.T,
            triangles=self.triangles,
            triangle_part=self.triangle_part,
            joints=self.joints @ r.T + t,
            joint_tolerance=self.joint_tolerance,
            bone_segments=self.bone_segments @ r.T + t,
            bone_radii=self.bone_radii,
            hand_vertex_count=self.hand_vertex_count,
        )


def mirror(mesh: HandMesh) -> HandMesh:
    """A left hand from a right one: reflect x in the hand frame."""
    return mesh.transformed(np.diag([-1.0, 1.0, 1.0]), np.zeros(3))


@functools.lru_cache(maxsize=4)
def capsule_template(around: int = 12, rings_per_half: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit directions (V, 3), half flags (V,) (0: lower end, 1: upper end), triangles (T, 3).

    Axis along +z. Ring 0 is next to the lower pole; rings ``rings_per_half - 1`` and
    ``rings_per_half`` are the two equators (same directions, opposite ends).
    """
    theta = 2.0 * np.pi * np.arange(around) / around
    lower = -0.5 * np.pi + 0.5 * np.pi * np.arange(1, rings_per_half + 1) / rings_per_half  # .. 0
    lats = np.concatenate([lower, -lower[::-1]])  # up to the equator, then back up to the pole
    halves = np.repeat([0, 1], rings_per_half)
    ring_dirs = np.stack(
        [
            np.cos(lats)[:, None] * np.cos(theta)[None],
            np.cos(lats)[:, None] * np.sin(theta)[None],
            np.repeat(np.sin(lats)[:, None], around, axis=1),
        ],
        axis=-1,
    ).reshape(-1, 3)
    dirs = np.concatenate([[[0.0, 0.0, -1.0]], ring_dirs, [[0.0, 0.0, 1.0]]])
    half = np.concatenate([[0], np.repeat(halves, around), [1]])

    def ring(i: int) -> np.ndarray:
        return 1 + i * around + np.arange(around)

    tris = []
    nxt = np.roll(np.arange(around), -1)
    r0 = ring(0)
    tris.append(np.stack([np.zeros(around, int), r0[nxt], r0], axis=1))
    for i in range(2 * rings_per_half - 1):
        a, b = ring(i), ring(i + 1)
        tris.append(np.stack([a, a[nxt], b[nxt]], axis=1))
        tris.append(np.stack([a, b[nxt], b], axis=1))
    top = len(dirs) - 1
    rl = ring(2 * rings_per_half - 1)
    tris.append(np.stack([rl, rl[nxt], np.full(around, top)], axis=1))
    return dirs, half, np.concatenate(tris).astype(np.uint32)


@functools.lru_cache(maxsize=4)
def sphere_directions(n: int = 40) -> np.ndarray:
    """(n, 3) near-uniform unit vectors (Fibonacci lattice) for sampling palm spheres."""
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = np.pi * (1.0 + 5**0.5) * i
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def capsules(
    ends: np.ndarray, radii: np.ndarray, side_axes: np.ndarray, flatten: np.ndarray, around: int = 12
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices, normals, triangles of K tapered capsules.

    ends (K, 2, 3) centres of the two caps; radii (K, 2); side_axes (K, 2, 3) two unit
    vectors across the bone (the second is scaled by ``flatten`` (K,), for flattened
    cross-sections such as the forearm's).
    """
    dirs, half, tris = capsule_template(around)
    k = len(ends)
    axis = ends[:, 1] - ends[:, 0]
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    # Re-orthogonalise the side axes against the bone so that capsules stay round.
    e1 = side_axes[:, 0] - axis * np.sum(side_axes[:, 0] * axis, axis=1, keepdims=True)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(axis, e1)
    basis = np.stack([e1, e2, axis], axis=1)  # (K, 3, 3) rows
    r = radii[:, half]  # (K, V)
    local = dirs[None] * r[..., None]
    local[..., 1] *= flatten[:, None]
    verts = ends[:, half] + np.einsum("kvi,kij->kvj", local, basis)
    ndir = np.broadcast_to(dirs, (k,) + dirs.shape).copy()
    ndir[..., 1] /= flatten[:, None]
    normals = np.einsum("kvi,kij->kvj", ndir, basis)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    offsets = (np.arange(k, dtype=np.uint32) * len(dirs))[:, None, None]
    return verts.reshape(-1, 3), normals.reshape(-1, 3), (tris[None] + offsets).reshape(-1, 3)


def convex_palm(centres: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices, normals, triangles of the convex hull of spheres (centres (N, 3), radii (N,))."""
    dirs = sphere_directions()
    points = (centres[:, None] + radii[:, None, None] * dirs[None]).reshape(-1, 3)
    normals = np.broadcast_to(dirs, (len(centres),) + dirs.shape).reshape(-1, 3)
    hull = ConvexHull(points)
    used, tris = np.unique(hull.simplices, return_inverse=True)
    return points[used], normals[used], tris.reshape(-1, 3).astype(np.uint32)


def build_hand_mesh(shape: HandShape, skeleton: Skeleton, forearm_length: float) -> HandMesh:
    """The mesh of a right hand (hand frame) for a posed skeleton; ``mirror`` it for a left hand."""
    j = skeleton.joints
    s = shape.scale

    # Finger and thumb bones: one capsule per segment, proximal first.
    ends, radii, axes, parts = [], [], [], []
    for f, chain in enumerate(FINGER_JOINTS):
        r = shape.thumb_radius if f == 0 else shape.finger_radius[f - 1]
        for k in range(3):
            a, b = j[chain[k]], j[chain[k + 1]]
            frame = skeleton.frames[chain[k + 1]]
            if k == 2:  # end the last cap inside the fingertip: the tip keypoint is near the skin
                b = b - 0.5 * r[3] * frame[1]
            ends.append((a, b))
            radii.append((r[k], r[k + 1]))
            axes.append((frame[0], frame[2]))
            parts.append(finger_part(f, 2 - k))
    bone_ends, bone_radii = np.array(ends), np.array(radii)

    # Forearm stub, flattened (wider than thick), starting just proximal to the wrist.
    width, proximal, thickness = skeleton.forearm_axes
    start = j[0] + 0.02 * s * proximal
    forearm_ends = np.array([[start, start + forearm_length * proximal]])
    forearm_radii = np.array([[0.025, 0.030]]) * s * (shape.palm_radius / (0.0115 * s))

    cv, cn, ct = capsules(
        bone_ends, bone_radii, np.array(axes), np.full(len(bone_ends), 0.92)
    )
    fv, fn, ft = capsules(
        forearm_ends, forearm_radii, np.array([[width, thickness]]), np.array([0.72]), around=16
    )

    # Palm: knuckles, two wrist bones, hypothenar, thumb base and the thenar web.
    width_factor = shape.palm_radius / (0.0115 * s)
    mcps = j[[8, 12, 16, 20]]
    thenar = j[4] + 0.3 * (j[3] - j[4])
    palm_centres = np.concatenate(
        [
            mcps,
            np.array([[0.017 * width_factor, 0.004, 0.0], [-0.019 * width_factor, 0.006, 0.0]]) * s,
            [[-0.029 * s * width_factor, 0.036 * s, mcps[3, 2] * 0.5]],
            [j[4], thenar],
        ]
    )
    palm_radii = np.array(
        [shape.palm_radius] * 4 + [0.014 * s * width_factor] * 2 + [0.0125 * s * width_factor]
        + [shape.thumb_radius[0], 0.9 * shape.thumb_radius[0]]
    )
    pv, pn, pt = convex_palm(palm_centres, palm_radii)

    n_caps, n_palm = len(cv), len(pv)
    vertices = np.concatenate([cv, pv, fv])
    normals = np.concatenate([cn, pn, fn])
    triangles = np.concatenate([ct, pt + n_caps, ft + n_caps + n_palm]).astype(np.uint32)
    tris_per_capsule = len(ct) // len(bone_ends)
    triangle_part = np.concatenate(
        [np.repeat(parts, tris_per_capsule), np.full(len(pt), PALM_PART), np.full(len(ft), FOREARM_PART)]
    )

    # How far in front of a joint its own surface may be along a line of sight. Inside
    # a capsule of radius r a ray leaves the flesh after r / sin(angle to the bone):
    # 2 r covers lines of sight down to 30 degrees from the bone (and the fingertip,
    # 0.5 r off its cap's centre); steeper views look along the finger, whose own
    # segments then hide the joint. The palm is a slab (same argument, 2.5 half
    # thicknesses) and the wrist sits between the two wrist spheres.
    tolerance = np.zeros(NUM_JOINTS)
    for f, chain in enumerate(FINGER_JOINTS):
        r = shape.thumb_radius if f == 0 else shape.finger_radius[f - 1]
        tolerance[list(chain[1:])] = 2.0 * r[1:]
        tolerance[chain[0]] = 2.5 * (shape.thumb_radius[0] if f == 0 else shape.palm_radius)
    tolerance[0] = np.abs(palm_centres[4:6, 0]).max() + palm_radii[4]
    return HandMesh(
        vertices=vertices,
        normals=normals,
        triangles=triangles,
        triangle_part=triangle_part.astype(np.int64),
        joints=j.copy(),
        joint_tolerance=tolerance + SURFACE_MARGIN_M,
        bone_segments=bone_ends,
        bone_radii=bone_radii,
        hand_vertex_count=n_caps + n_palm,
    )
