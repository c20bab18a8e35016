// One error shape for everything a user can fix: the field (flag, setting, JSON path) and why.
export class FieldError extends Error {
  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${field}: ${reason}`);
    this.name = new.target.name;
  }
}
