"""Scores an ARC Kaggle submission against a solutions file.

  python -m experiments.score_arc --submission=submission.json \
      --solutions=/path/arc-agi_evaluation_solutions.json
"""

from absl import flags

from experiments import cli
from tiny_recursive import arc_evaluation

_SUBMISSION = flags.DEFINE_string('submission', None, 'Kaggle submission.json to score.')
_SOLUTIONS = flags.DEFINE_string('solutions', None, 'Solutions JSON {task_id: [grid, ...]}.')
_PER_TASK = flags.DEFINE_bool('per_task', False, 'Also print every task score.')


def main(argv):
  del argv
  result = arc_evaluation.score_submission(_SUBMISSION.value, _SOLUTIONS.value)
  if _PER_TASK.value:
    for task_id, score in sorted(result['per_task'].items()):
      print(f'{task_id}\t{score:.4f}')
  print(f"score (pass@2, mean over tasks): {result['score']:.4f} "
        f"({result['tasks_fully_solved']}/{result['num_tasks']} tasks fully solved)")


if __name__ == '__main__':
  flags.mark_flags_as_required(['submission', 'solutions'])
  cli.run(main)
