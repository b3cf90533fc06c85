// The request body of POST /x/partners/:partnerId/instant_booking, validated by the global
// ValidationPipe. Unknown fields are rejected so a typo never books something unintended.
import { Type } from 'class-transformer';
import {
  ArrayMaxSize,
  ArrayMinSize,
  IsArray,
  IsEmail,
  IsISO31661Alpha2,
  IsISO4217CurrencyCode,
  IsISO8601,
  IsNumber,
  IsString,
  Length,
  Max,
  Min,
  ValidateNested,
} from 'class-validator';

export class PolicyholderDto {
  @IsString()
  @Length(1, 100)
  first_name!: string;

  @IsString()
  @Length(1, 100)
  last_name!: string;

  @IsEmail()
  email!: string;

  @IsISO31661Alpha2()
  country!: string;
}

export class QuoteDto {
  @IsString()
  @Length(1, 50)
  policy_type!: string;

  @IsISO8601({ strict: true })
  policy_start_date!: string;

  @IsNumber({ maxDecimalPlaces: 2 })
  @Min(0)
  @Max(1_000_000)
  price!: number;
}

export class InstantBookingDto {
  @IsISO4217CurrencyCode()
  currency!: string;

  @ValidateNested()
  @Type(() => PolicyholderDto)
  policyholder!: PolicyholderDto;

  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(10)
  @ValidateNested({ each: true })
  @Type(() => QuoteDto)
  quotes!: QuoteDto[];
}
