// Exit codes that scripts may rely on, and the errors that carry them to the dispatcher.

export const ExitCode = {
  Ok: 0,
  /** Something failed at run time: a download, a model that cannot load or does not fit, a server that did not stop. */
  Failure: 1,
  /** Bad command line or configuration. */
  Usage: 2,
  /** `status` and `stop`: no server is running. */
  NotRunning: 3,
  /** `status`: a server answers but is not ready (still loading, or its model failed to load). */
  NotReady: 4,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** An error whose message is for the user, ending the command with `code`. */
export class CliError extends Error {
  constructor(message: string, readonly code: ExitCode = ExitCode.Failure) {
    super(message);
  }
}

export class UsageError extends CliError {
  constructor(message: string) {
    super(message, ExitCode.Usage);
  }
}
