"""Robot recordings in and out: LeRobot (v2.1, v3.0) and robomimic datasets and folders of
mp4 files read as `RecordedEpisode`s (`episode`), stored in a preference dataset
(`importing`), and aligned rollouts written back in those formats."""
