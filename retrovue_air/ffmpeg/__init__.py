"""What every role knows about ffmpeg: which binary to run (binary), how to tell of its exit
(exits), and what the house encodes with (profile). Each role builds its own command lines."""
