//! Black-box test harness for real starcite processes.
