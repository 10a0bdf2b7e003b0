"""``bfpo recipes``: the recipes shipped inside the package, listed and copied out to edit.

In the spirit of torchtune's ``tune ls`` / ``tune cp``: ``--config`` of ``bfpo train`` and ``bfpo sft``
takes a path or the name of a shipped recipe (``paper_mistral_bfpo``, with or without ``.yaml``; a flat YAML
file of settings), so a user who installed bfpo from a wheel has the paper's recipes too.
``bfpo recipes cp NAME DEST`` copies one out (never over an existing file) for editing; ``accelerate/NAME``
copies an accelerate config.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import List, Optional, Sequence

from bfpo.errors import OutputExistsError, UserInputError, UserPathNotFoundError

#: the folder of shipped recipes (package data)
SHIPPED = Path(__file__).resolve().parent.parent / "recipes"


class RecipeNotFound(UserPathNotFoundError):
    """Neither a file nor the name of a shipped recipe."""


def shipped_recipes() -> List[Path]:
    """Every shipped YAML file (recipes first, then ``accelerate/`` configs), sorted by name."""
    return sorted(SHIPPED.glob("*.yaml")) + sorted((SHIPPED / "accelerate").glob("*.yaml"))


def recipe_name(path: Path) -> str:
    """The name a shipped file is known by: its stem, prefixed with ``accelerate/`` for those configs."""
    rel = path.relative_to(SHIPPED).with_suffix("")
    return rel.as_posix()


def summary(path: Path) -> str:
    """The first comment line of a recipe, without its ``#``."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def resolve_recipe(config: str | Path) -> Path:
    """A recipe file: ``config`` itself when it exists, else the shipped recipe of that name."""
    path = Path(config).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise RecipeNotFound(f"--config {config}: is a directory, not a recipe file")
    name = str(config)[:-5] if str(config).endswith(".yaml") else str(config)
    shipped = SHIPPED / f"{name}.yaml"
    if shipped.is_file() and "/" not in name.replace("accelerate/", "", 1):
        return shipped
    names = ", ".join(recipe_name(p) for p in shipped_recipes() if p.parent == SHIPPED)
    raise RecipeNotFound(
        f"recipe not found: {config} is neither a file nor a shipped recipe ({names}); `bfpo recipes` lists them"
    )


def copy_recipe(name: str, dest: str | Path) -> Path:
    """Copy shipped recipe ``name`` to ``dest`` (a file, or a folder to copy into). Refuses to overwrite."""
    src = resolve_recipe(name)
    if src.parent != SHIPPED and src.parent != SHIPPED / "accelerate":
        raise RecipeNotFound(f"{name} is not a shipped recipe; `bfpo recipes` lists them")
    out = Path(dest).expanduser()
    if out.is_dir():
        out = out / src.name
    if out.exists():
        raise OutputExistsError(f"{out} exists; not overwriting it (choose another destination)")
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out)
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``bfpo recipes [ls]`` lists the shipped recipes; ``bfpo recipes cp NAME DEST`` copies one out."""
    p = argparse.ArgumentParser(prog="bfpo recipes", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "action",
        nargs="?",
        choices=["ls", "cp"],
        default="ls",
        help="ls: list the shipped recipes (default); cp NAME DEST: copy one out to edit",
    )
    p.add_argument("name", nargs="?", help="cp: the shipped recipe's name (see ls)")
    p.add_argument("dest", nargs="?", help="cp: a file or folder to copy to (never overwritten)")
    args = p.parse_args(argv)
    if args.action == "cp":
        if not args.name or not args.dest:
            raise UserInputError(
                "bfpo recipes cp: needs NAME and DEST, e.g. `bfpo recipes cp paper_mistral_bfpo my.yaml`"
            )
        print(f"copied {args.name} to {copy_recipe(args.name, args.dest)}")
        return
    if args.name or args.dest:
        raise UserInputError(f"bfpo recipes ls: takes no NAME/DEST (got {args.name!r}); did you mean cp?")
    rows = [(recipe_name(p), summary(p)) for p in shipped_recipes()]
    width = max(len(n) for n, _ in rows)
    for name, text in rows:
        print(f"{name:<{width}}  {text}")
    print(f"\n(shipped in {SHIPPED}; use a name as --config, or `bfpo recipes cp NAME DEST` to edit one)")
