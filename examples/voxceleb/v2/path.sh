# Sourced by every script of a recipe, from the recipe directory.
# The repository root is found through the recipe's tools/ link, so the same
# file serves recipes at any depth and `python -m wespeaker_py...` works
# without `pip install`.
if ! wespeaker_root=$(cd -P tools/.. 2>/dev/null && pwd); then
  echo "path.sh: run the recipe from its own directory (no tools/ link in $PWD)" >&2
  return 1 2>/dev/null || exit 1
fi
export PATH=$PWD:$PATH
export PYTHONPATH=$wespeaker_root${PYTHONPATH:+:$PYTHONPATH}
# UTF-8 in Python even when LC_ALL=C
export PYTHONIOENCODING=UTF-8
