"""nbgrader's settings for the course's assignments; run nbgrader from this folder (docs/instructors-guide.md).

The course directory is nbgrader's standard layout: ``source/<assignment>/`` holds the instructor's
notebooks (solutions and hidden tests included), ``release/<assignment>/`` what students get
(made by ``nbgrader generate_assignment``, kept in the repository and checked against the sources
by ``tests/test_classroom.py``), ``submitted/<student>/<assignment>/`` what comes back.
"""

c = get_config()  # noqa: F821 -- nbgrader defines get_config when it reads this file

c.CourseDirectory.course_id = "peftlab"
c.CourseDirectory.root = "."

# Grading runs the student's code. Each notebook runs in a kernel of its own; a cell still running after this
# many seconds is interrupted (an infinite loop scores zero on the cells it stops, and grading goes on).
# The assignments' honest cells take well under a second each, after the first one's imports.
c.Execute.timeout = 60
c.Execute.interrupt_on_timeout = True

# A kernel that dies (os._exit, a crash in compiled code, killed for memory) would make nbgrader drop the whole
# submission; this executor fails only the cell it died in and goes on in a new kernel (classroom/autograder.py).
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from nbconvert.preprocessors import ClearMetadataPreprocessor  # noqa: E402
from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, IgnorePattern, LimitOutput,  # noqa: E402
                                    SaveAutoGrades)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # autograder.py sits beside this file, not in the package
from autograder import ExecuteSurvivingCrashes  # noqa: E402

c.Autograde.autograde_preprocessors = [ExecuteSurvivingCrashes, IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
                                       SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]

# What a student finds where the solution was; a cell left so fails with a message, not a bare exception.
c.ClearSolutions.code_stub = {"python": '# YOUR CODE HERE\nraise NotImplementedError("not written yet: replace this line with your code")'}
