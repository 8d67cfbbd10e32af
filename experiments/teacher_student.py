r"""Teacher-student soft committee machines (Goldt et al. 2019; report section 2).

  python -m experiments.teacher_student [--quick] [--student_units=2,3,4,6,8,10] [--noise=0.5] \
      [--input_dim=500] [--time=100] [--num_seeds=3] [--workdir=runs/teacher_student]

Students of K >= M units learn a teacher's noisy labels by online SGD, first layer only or both layers;
every K and seed of a mode is one vmapped program and the generalisation error is exact (closed form).
Writes results.json (curves, final errors, overlaps, the headline's verdict) and figure.png/.pdf.
Options: redundancy_jax.related.teacher_student.TeacherStudentConfig.
"""

from experiments import cli
from redundancy_jax.related import teacher_student


def main(config: teacher_student.TeacherStudentConfig) -> dict:
  return teacher_student.run(config)


if __name__ == "__main__":
  cli.run(main, teacher_student.TeacherStudentConfig)
