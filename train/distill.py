"""Knowledge-token distillation (ViTPose paper section 3.4, Table 8): transfer a teacher's knowledge through a

The code is `vitpose_fast.training.distill`, whose docstring lists the options."""

from vitpose_fast.training.distill import run

if __name__ == "__main__":
    run()
